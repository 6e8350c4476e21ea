//! `kiunga import PATH…`: bulk load of FHIR JSON Bundles (transaction, batch or collection),
//! NDJSON files and directories of them, through the same translation and tracker code as the API.
//!
//! One file (a Bundle, typically one patient's record) or one NDJSON line is one database
//! transaction, so an interruption (Ctrl-C) never leaves half a patient behind. Inside it, each
//! entry runs in a savepoint: a rejected entry is rolled back and reported, the rest is kept.
//! Re-importing stores nothing twice: Patients are found again by identifier and other records by
//! their id in the source (`external_ref`).

mod group;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::app::AppState;
use crate::context::RequestContext;
use crate::error::Error;
use crate::store::Scoped;
use crate::tracker::Env;
pub use report::Report;

pub struct Options {
    /// Org unit owning records whose organisation no mapping resolves (overrides the config).
    pub default_org_unit: Option<i64>,
    pub interrupted: Arc<AtomicBool>,
    /// Called after each unit of work with (units done, units in all).
    pub progress: Box<dyn FnMut(u64, u64)>,
}

/// One unit of work: the resources of one Bundle file or one NDJSON line.
pub struct Unit {
    pub origin: String,
    pub entries: Vec<Value>,
}

/// An entry for a resource read alone: keyed by its id when it has one, else by where it was read
/// (`file#line`), so that importing the same file again finds it.
fn keyed(resource: Value, place: &str) -> Value {
    match resource.get("id").and_then(Value::as_str) {
        Some(_) => serde_json::json!({ "resource": resource }),
        None => serde_json::json!({ "fullUrl": place, "resource": resource }),
    }
}

/// Every JSON/NDJSON file under `paths`, in a stable order.
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    // `top`: a path named by the user, where a file of another kind is a mistake (in a
    // directory such files are simply passed over).
    fn walk(p: &Path, out: &mut Vec<PathBuf>, top: bool) -> Result<(), Error> {
        if p.is_dir() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::invalid(format!("{}: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            children.sort();
            for c in children {
                walk(&c, out, false)?;
            }
        } else if p.is_file() {
            if p.extension().is_some_and(|x| x == "json" || x == "ndjson") {
                out.push(p.to_path_buf());
            } else if top {
                return Err(Error::invalid(format!(
                    "{}: not a .json or .ndjson file",
                    p.display()
                )));
            }
        } else {
            return Err(Error::invalid(format!(
                "{}: no such file or directory",
                p.display()
            )));
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out, true)?;
    }
    Ok(out)
}

/// Reads one file into units of work. A Bundle is one unit; every NDJSON line is one.
pub fn units_of(path: &Path, report: &mut Report) -> Vec<Unit> {
    let name = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            report.reject(&name, None, "file", format!("cannot read: {e}"));
            return Vec::new();
        }
    };
    if path.extension().is_some_and(|x| x == "ndjson") {
        let text = String::from_utf8_lossy(&bytes);
        return text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .filter_map(|(i, line)| {
                match kiunga_codec::parse(line.as_bytes(), kiunga_codec::Format::Json) {
                    Ok(r) => Some(Unit {
                        origin: format!("{name}:{}", i + 1),
                        entries: vec![keyed(r, &format!("{name}#{}", i + 1))],
                    }),
                    Err(e) => {
                        report.read += 1;
                        report.reject(&format!("{name}:{}", i + 1), None, "resource", e.message);
                        None
                    }
                }
            })
            .collect();
    }
    match kiunga_codec::parse_bundle(&bytes, kiunga_codec::Format::Json) {
        Ok(parsed) => {
            let mut entries = parsed
                .bundle
                .get("entry")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (i, err) in parsed.entry_errors.iter().enumerate().rev() {
                if let Some(e) = err {
                    report.read += 1;
                    let t = entries[i]
                        .pointer("/resource/resourceType")
                        .and_then(Value::as_str)
                        .unwrap_or("entry")
                        .to_string();
                    report.reject(&name, Some(i), &t, e.message.clone());
                    entries[i] = Value::Null;
                }
            }
            // Refused entries stay as nulls so that every entry keeps its index in the file.
            vec![Unit {
                origin: name,
                entries,
            }]
        }
        // Not a Bundle: a single resource file.
        Err(_) => match kiunga_codec::parse(&bytes, kiunga_codec::Format::Json) {
            Ok(r) => vec![Unit {
                entries: vec![keyed(r, &name)],
                origin: name,
            }],
            Err(e) => {
                report.read += 1;
                report.reject(&name, None, "file", e.message);
                Vec::new()
            }
        },
    }
}

/// Imports every file under `paths` and returns the report.
pub fn run(state: &AppState, paths: &[PathBuf], mut opts: Options) -> Result<Report, Error> {
    let files = files(paths)?;
    let mut report = Report::default();
    let mut conn = state.pool.get()?;
    let mappings = state.mappings();
    let env = Env {
        md: &state.metadata,
        mappings: &mappings,
        strict: false,
        default_org_unit: opts.default_org_unit.or(state.default_org_unit),
    };
    let ctx = RequestContext::system();
    let total = files.len() as u64;
    for (done, file) in files.iter().enumerate() {
        for unit in units_of(file, &mut report) {
            if opts.interrupted.load(Ordering::SeqCst) {
                report.interrupted = true;
                return Ok(report);
            }
            let mut unit_report = Report::default();
            let result = Scoped::transaction(&mut conn, &ctx, |s| {
                group::import_unit(s, &env, &unit, &mut unit_report, &opts.interrupted)
            });
            match result {
                Ok(()) => report.merge(unit_report),
                // Interrupted mid-unit: that unit is rolled back, the finished ones stay.
                Err(_) if opts.interrupted.load(Ordering::SeqCst) => {
                    report.interrupted = true;
                    return Ok(report);
                }
                Err(Error::Unavailable(m)) => return Err(Error::Unavailable(m)),
                Err(e) => {
                    report.read += unit_report.read;
                    report.reject(
                        &unit.origin,
                        None,
                        "unit",
                        format!("the whole unit was rolled back: {e}"),
                    );
                }
            }
        }
        (opts.progress)(done as u64 + 1, total);
    }
    Ok(report)
}
