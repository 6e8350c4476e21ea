//! Search parameters as they arrive in a query string (`name:modifier=value`).

use super::percent_decode;
use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub modifier: Option<String>,
    pub value: String,
}

pub const DEFAULT_COUNT: i64 = 20;
pub const MAX_COUNT: i64 = 1000;

pub fn parse_query(q: &str) -> Vec<Param> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let k = percent_decode(k);
            let (name, modifier) = match k.split_once(':') {
                Some((n, m)) => (n.to_string(), Some(m.to_string())),
                None => (k, None),
            };
            Param {
                name,
                modifier,
                value: percent_decode(v),
            }
        })
        .collect()
}

/// `_count` (default 20, at most 1000) and `_offset` of a search.
pub fn paging(params: &[Param]) -> Result<(i64, i64), Error> {
    let mut count = DEFAULT_COUNT;
    let mut offset = 0;
    for p in params {
        match p.name.as_str() {
            "_count" => {
                count = p
                    .value
                    .parse::<i64>()
                    .map_err(|_| {
                        Error::invalid(format!("_count `{}` is not a whole number", p.value))
                    })?
                    .clamp(0, MAX_COUNT)
            }
            "_offset" => {
                offset = p
                    .value
                    .parse::<i64>()
                    .map_err(|_| {
                        Error::invalid(format!("_offset `{}` is not a whole number", p.value))
                    })?
                    .max(0)
            }
            _ => {}
        }
    }
    Ok((count, offset))
}

/// The `next` and `previous` links of a page of `count` from `offset` out of `total`, on `url`
/// (the search's URL without its query).
pub fn paging_links(
    url: &str,
    params: &[Param],
    offset: i64,
    count: i64,
    total: i64,
) -> Vec<(&'static str, String)> {
    let mut links = Vec::new();
    if count > 0 && offset + count < total {
        links.push((
            "next",
            format!("{url}?{}", query_with_offset(params, offset + count)),
        ));
    }
    if offset > 0 {
        links.push((
            "previous",
            format!(
                "{url}?{}",
                query_with_offset(params, (offset - count).max(0))
            ),
        ));
    }
    links
}

/// Rebuilds a query string from parameters (for paging links), replacing `_offset`.
pub fn query_with_offset(params: &[Param], offset: i64) -> String {
    let mut parts: Vec<String> = params
        .iter()
        .filter(|p| p.name != "_offset")
        .map(|p| {
            let k = match &p.modifier {
                Some(m) => format!("{}:{m}", p.name),
                None => p.name.clone(),
            };
            format!("{}={}", encode(&k), encode(&p.value))
        })
        .collect();
    parts.push(format!("_offset={offset}"));
    parts.join("&")
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modifiers_and_decodes() {
        let p = parse_query("name:exact=Mto%20Health&_count=5");
        assert_eq!(
            p[0],
            Param {
                name: "name".into(),
                modifier: Some("exact".into()),
                value: "Mto Health".into()
            }
        );
        assert_eq!(paging(&p).expect("test input is valid"), (5, 0));
        assert!(query_with_offset(&p, 10).ends_with("_offset=10"));
    }
}
