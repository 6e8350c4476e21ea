//! UCUM unit conversion for the units the registry's data elements use. Each unit is defined by
//! its dimension and an affine map to that dimension's base unit (base = value × factor + offset).

struct Unit {
    code: &'static str,
    dimension: &'static str,
    factor: f64,
    offset: f64,
}

const UNITS: &[Unit] = &[
    Unit {
        code: "kg",
        dimension: "mass",
        factor: 1.0,
        offset: 0.0,
    },
    Unit {
        code: "g",
        dimension: "mass",
        factor: 0.001,
        offset: 0.0,
    },
    Unit {
        code: "[lb_av]",
        dimension: "mass",
        factor: 0.453_592_37,
        offset: 0.0,
    },
    Unit {
        code: "[oz_av]",
        dimension: "mass",
        factor: 0.028_349_523_125,
        offset: 0.0,
    },
    Unit {
        code: "Cel",
        dimension: "temperature",
        factor: 1.0,
        offset: 0.0,
    },
    Unit {
        code: "[degF]",
        dimension: "temperature",
        factor: 5.0 / 9.0,
        offset: -32.0 * 5.0 / 9.0,
    },
    Unit {
        code: "K",
        dimension: "temperature",
        factor: 1.0,
        offset: -273.15,
    },
    Unit {
        code: "cm",
        dimension: "length",
        factor: 1.0,
        offset: 0.0,
    },
    Unit {
        code: "m",
        dimension: "length",
        factor: 100.0,
        offset: 0.0,
    },
    Unit {
        code: "mm",
        dimension: "length",
        factor: 0.1,
        offset: 0.0,
    },
    Unit {
        code: "[in_i]",
        dimension: "length",
        factor: 2.54,
        offset: 0.0,
    },
    Unit {
        code: "[ft_i]",
        dimension: "length",
        factor: 30.48,
        offset: 0.0,
    },
    Unit {
        code: "mm[Hg]",
        dimension: "pressure",
        factor: 1.0,
        offset: 0.0,
    },
    Unit {
        code: "kPa",
        dimension: "pressure",
        factor: 7.500_615_758,
        offset: 0.0,
    },
    Unit {
        code: "g/dL",
        dimension: "mass-concentration",
        factor: 1.0,
        offset: 0.0,
    },
    Unit {
        code: "g/L",
        dimension: "mass-concentration",
        factor: 0.1,
        offset: 0.0,
    },
    Unit {
        code: "mg/dL",
        dimension: "mass-concentration",
        factor: 0.001,
        offset: 0.0,
    },
    Unit {
        code: "/min",
        dimension: "rate",
        factor: 1.0,
        offset: 0.0,
    },
    Unit {
        code: "%",
        dimension: "fraction",
        factor: 1.0,
        offset: 0.0,
    },
    Unit {
        code: "kg/m2",
        dimension: "area-density",
        factor: 1.0,
        offset: 0.0,
    },
];

fn unit(code: &str) -> Option<&'static Unit> {
    UNITS.iter().find(|u| u.code == code)
}

pub fn is_known(code: &str) -> bool {
    unit(code).is_some()
}

/// Converts `value` from UCUM `from` to UCUM `to`, or says why it cannot.
pub fn convert(value: f64, from: &str, to: &str) -> Result<f64, String> {
    if from == to {
        return Ok(value);
    }
    let f = unit(from).ok_or_else(|| {
        format!(
            "`{from}` is not a UCUM unit this registry converts (known: {})",
            UNITS.iter().map(|u| u.code).collect::<Vec<_>>().join(", ")
        )
    })?;
    let t = unit(to).ok_or_else(|| format!("the data element's unit `{to}` has no conversion"))?;
    if f.dimension != t.dimension {
        return Err(format!(
            "`{from}` ({}) cannot be converted to `{to}` ({})",
            f.dimension, t.dimension
        ));
    }
    let base = value * f.factor + f.offset;
    Ok((base - t.offset) / t.factor)
}

#[cfg(test)]
mod tests {
    use super::convert;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn conversions() {
        assert!(close(
            convert(72500.0, "g", "kg").expect("test input is valid"),
            72.5
        ));
        assert!(close(
            convert(160.0, "[lb_av]", "kg").expect("test input is valid"),
            72.574_779_2
        ));
        assert!(close(
            convert(98.6, "[degF]", "Cel").expect("test input is valid"),
            37.0
        ));
        assert!(close(
            convert(37.0, "Cel", "[degF]").expect("test input is valid"),
            98.6
        ));
        assert!(close(
            convert(68.0, "[in_i]", "cm").expect("test input is valid"),
            172.72
        ));
        assert!(close(
            convert(1.7, "m", "cm").expect("test input is valid"),
            170.0
        ));
        assert!(close(
            convert(120.0, "g/L", "g/dL").expect("test input is valid"),
            12.0
        ));
        assert!(close(
            convert(120.0, "mm[Hg]", "mm[Hg]").expect("test input is valid"),
            120.0
        ));
        assert!(convert(1.0, "kg", "cm")
            .unwrap_err()
            .contains("cannot be converted"));
        assert!(convert(1.0, "stone", "kg")
            .unwrap_err()
            .contains("not a UCUM unit"));
    }
}
