//! FHIR XML, around fhirbolt's reader and writer: a pre-scan that refuses DTDs, deep nesting and
//! documents fhirbolt would wrongly accept (truncated ones) before its parser runs; a walk that
//! checks values and names the element at fault; narratives kept as written (fhirbolt trims
//! their whitespace); and compact output (fhirbolt always indents).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::ops::Range;

use serde_json::Value;

use crate::bolt::{self, XmlFailure};
use crate::json::MAX_DEPTH;
use crate::schema::{self, Kind, Prim};
use crate::{bundle, errors, primitives, walk, CodecError, ParsedBundle};

pub(crate) fn parse(bytes: &[u8]) -> Result<Value, CodecError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| CodecError::syntax(format!("invalid XML: not UTF-8 ({e})")))?;
    let body = prescan(text)?;
    // Our walk goes first: it names the element at fault (fhirbolt never does) and checks the
    // XML spelling of values, which the conversion to JSON hides (`007` becomes 7).
    let mut divs = Vec::new();
    walk_xml(body, &mut divs, None)?;
    let mut value = bolt::xml_to_json(body.as_bytes()).map_err(conversion_error)?;
    restore_narratives(&mut value, body, &divs);
    walk::check_resource(&value)?;
    Ok(value)
}

/// Reads an XML Bundle for [`crate::parse_bundle`]: the whole Bundle goes through fhirbolt,
/// with our value checks reported per entry instead of failing the Bundle, then the result is
/// checked entry by entry as FHIR JSON.
///
/// fhirbolt reads the whole document, so whatever it refuses (an unknown element or a missing
/// required element in any entry, a value it cannot store) fails the whole Bundle; when our
/// walk found a bad value in an entry, that located error is returned, being the likely cause.
pub(crate) fn parse_bundle(bytes: &[u8]) -> Result<ParsedBundle, CodecError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| CodecError::syntax(format!("invalid XML: not UTF-8 ({e})")))?;
    let body = prescan(text)?;
    match root_name(body) {
        Some("Bundle") => {}
        Some(other) => {
            let what = if schema::resource_type(other).is_some() {
                format!("the resource is a {other}")
            } else {
                format!("the root element is <{other}>, which is not an R4 resource type")
            };
            return Err(CodecError::structure(
                format!("expected a Bundle (<Bundle xmlns=\"http://hl7.org/fhir\">), but {what}"),
                None,
            ));
        }
        None => {
            return Err(CodecError::syntax(
                "invalid XML: no root element".to_owned(),
            ))
        }
    }

    let mut divs = Vec::new();
    let mut bad_values = Vec::new();
    walk_xml(body, &mut divs, Some(&mut bad_values))?;
    // A bad value outside the entries belongs to no entry.
    if let Some(i) = bad_values.iter().position(|e| !in_entry(e)) {
        return Err(bad_values.swap_remove(i));
    }
    let mut value = match bolt::xml_to_json(body.as_bytes()) {
        Ok(value) => value,
        Err(failure @ XmlFailure::Syntax(_)) => return Err(conversion_error(failure)),
        Err(failure) => {
            return Err(match bad_values.into_iter().next() {
                Some(located) => located,
                None => conversion_error(failure),
            })
        }
    };
    restore_narratives(&mut value, body, &divs);
    let mut parsed = bundle::check(value, false)?;

    // The walk of the XML saw the values as written: its error comes first in its entry.
    let mut seen = vec![false; parsed.entry_errors.len()];
    for e in bad_values {
        let i = e.expression.as_deref().and_then(bundle::entry_index);
        match i.and_then(|i| Some((i, seen.get_mut(i)?))) {
            Some((_, true)) => {}
            Some((i, first)) => {
                *first = true;
                parsed.entry_errors[i] = Some(e);
            }
            // An entry fhirbolt did not return: cannot happen; refuse rather than lose it.
            None => return Err(e),
        }
    }
    Ok(parsed)
}

fn in_entry(e: &CodecError) -> bool {
    e.expression
        .as_deref()
        .and_then(bundle::entry_index)
        .is_some()
}

/// The local name of the document's root element.
fn root_name(text: &str) -> Option<&str> {
    let mut root = None;
    // The error only stops the scan at the first tag.
    let _ = scan(text, |tag| {
        if let Tag::Open { name, .. } = tag {
            root = Some(name.rsplit(':').next().unwrap_or(name));
        }
        Err(CodecError::syntax(String::new()))
    });
    root
}

fn conversion_error(failure: XmlFailure) -> CodecError {
    match failure {
        XmlFailure::Syntax(m) => CodecError::syntax(format!("invalid XML: {m}")),
        XmlFailure::Structure(m) => errors::from_fhirbolt(&m, None),
        // The walk checks every decimal it can type, so this is one it cannot.
        XmlFailure::Decimal => CodecError::primitive(
            "invalid decimal: a decimal value is not a number such as 12 or -0.5".to_owned(),
            None,
        ),
    }
}

/// Writes FHIR JSON as XML, with the narratives as they were in the JSON: compact XML of the
/// shapes `xml_out` knows is written there, the rest through fhirbolt (the same bytes).
pub(crate) fn serialize(resource: &Value, pretty: bool) -> Result<Vec<u8>, CodecError> {
    if !pretty && !has_narrative(resource) {
        if let Some(xml) = crate::xml_out::write(resource) {
            return Ok(xml);
        }
    }
    through_fhirbolt(resource, pretty)
}

/// [`serialize`] by fhirbolt's writer only.
pub(crate) fn through_fhirbolt(resource: &Value, pretty: bool) -> Result<Vec<u8>, CodecError> {
    let xml = bolt::json_to_xml(resource).map_err(|m| {
        let e = errors::from_fhirbolt(&m, Some(resource));
        CodecError {
            message: format!("cannot write the resource as XML: {}", e.message),
            ..e
        }
    })?;
    // Compact before the narratives go back in: whitespace inside XHTML can matter.
    let xml = if pretty { xml } else { compact(&xml) };
    let Ok(text) = String::from_utf8(xml) else {
        return Err(CodecError::structure(
            "fhirbolt wrote XML that is not UTF-8".to_owned(),
            None,
        ));
    };
    // Attribute values have `<` escaped, so `<div` is a narrative's start tag or nothing: the
    // walk (a tenth of the CPU of an XML `$everything`) is skipped when there is none.
    let mut divs = Vec::new();
    if text.contains("<div") && walk_xml(&text, &mut divs, None).is_ok() && !divs.is_empty() {
        return Ok(splice_narratives(&text, &divs, resource).into_bytes());
    }
    Ok(text.into_bytes())
}

/// Whether a FHIR JSON value holds a narrative (`text.div`) anywhere.
fn has_narrative(v: &Value) -> bool {
    match v {
        Value::Object(map) => map
            .iter()
            .any(|(k, x)| (k == "text" && x.get("div").is_some()) || has_narrative(x)),
        Value::Array(items) => items.iter().any(has_narrative),
        _ => false,
    }
}

/// fhirbolt trims the text nodes of narrative XHTML when it reads XML (`<p>Hello <b>you</b>
/// there</p>` becomes `<p>Hello<b>you</b>there</p>`), so each `div` of the JSON it returns is
/// replaced by the `div` exactly as the document wrote it.
fn restore_narratives(value: &mut Value, text: &str, divs: &[(String, Range<usize>)]) {
    for (path, span) in divs {
        let raw = &text[span.clone()];
        if !is_xhtml_div(raw) {
            continue;
        }
        if let Some(slot @ Value::String(_)) = at_path_mut(value, path) {
            *slot = Value::String(raw.to_owned());
        }
    }
}

/// fhirbolt trims the narrative's text nodes when it writes XML too; put back each `div` as the
/// JSON has it, when it is well-formed XHTML (else fhirbolt's rendering stays).
fn splice_narratives(xml: &str, divs: &[(String, Range<usize>)], resource: &Value) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut copied = 0;
    for (path, span) in divs {
        let Some(Value::String(div)) = at_path(resource, path) else {
            continue;
        };
        if !is_xhtml_div(div) || prescan(div).is_err() {
            continue;
        }
        out.push_str(&xml[copied..span.start]);
        out.push_str(div);
        copied = span.end;
    }
    out.push_str(&xml[copied..]);
    out
}

/// A narrative `div` that declares the XHTML namespace itself, as FHIR requires, so that it can
/// stand on its own in JSON or in any XML document.
fn is_xhtml_div(s: &str) -> bool {
    let start_tag = s.find('>').map_or(s, |end| &s[..end]);
    s.starts_with("<div")
        && s[4..].starts_with(|c: char| c.is_ascii_whitespace())
        && attribute(&start_tag[4..], "xmlns") == Some("http://www.w3.org/1999/xhtml")
}

/// The element of a FHIR JSON resource at a FHIRPath made by our walks
/// (`Bundle.entry[0].resource.text.div`): dotted names with optional `[index]`, the first being
/// the resource type.
fn at_path<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    let mut here = root;
    for segment in path.split('.').skip(1) {
        let (name, index) = split_index(segment)?;
        here = here.get(name)?;
        if let Some(i) = index {
            here = here.get(i)?;
        }
    }
    Some(here)
}

fn at_path_mut<'v>(root: &'v mut Value, path: &str) -> Option<&'v mut Value> {
    let mut here = root;
    for segment in path.split('.').skip(1) {
        let (name, index) = split_index(segment)?;
        here = here.get_mut(name)?;
        if let Some(i) = index {
            here = here.get_mut(i)?;
        }
    }
    Some(here)
}

fn split_index(segment: &str) -> Option<(&str, Option<usize>)> {
    match segment.split_once('[') {
        Some((name, rest)) => Some((name, Some(rest.strip_suffix(']')?.parse().ok()?))),
        None if segment.contains('(') => None,
        None => Some((segment, None)),
    }
}

/// Removes the indentation fhirbolt's XML writer always adds. fhirbolt trims every text node it
/// writes (including inside the narrative's XHTML), so whitespace between `>` and `<` in its
/// output is always indentation, and attribute values have `<` and `>` escaped.
fn compact(xml: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(xml.len());
    let mut i = 0;
    while i < xml.len() {
        let b = xml[i];
        out.push(b);
        i += 1;
        if b == b'>' {
            let run = xml[i..]
                .iter()
                .take_while(|c| c.is_ascii_whitespace())
                .count();
            if run > 0 && xml.get(i + run).is_none_or(|&c| c == b'<') {
                i += run;
            }
        }
    }
    out
}

/// One tag of an XML document; `span` is its byte range in the document.
enum Tag<'a> {
    Open {
        name: &'a str,
        attrs: &'a str,
        empty: bool,
        span: Range<usize>,
    },
    Close {
        name: &'a str,
        span: Range<usize>,
    },
}

/// Calls `on_tag` for every element tag, skipping comments and processing instructions, and
/// refusing any `<!DOCTYPE` / `<!ENTITY` / other markup declaration: FHIR XML has no DTD, and
/// a DTD is how entity-expansion (billion laughs) and external-entity (XXE) attacks start.
fn scan<'a>(
    text: &'a str,
    mut on_tag: impl FnMut(Tag<'a>) -> Result<(), CodecError>,
) -> Result<(), CodecError> {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(offset) = b[i..].iter().position(|&c| c == b'<') {
        let start = i + offset;
        let rest = &text[start..];
        let skip_to = |end: &str, from: usize, what: &str| {
            text[from..]
                .find(end)
                .map(|at| from + at + end.len())
                .ok_or_else(|| CodecError::syntax(format!("invalid XML: unterminated {what}")))
        };
        if rest.starts_with("<!--") {
            i = skip_to("-->", start + 4, "comment")?;
            continue;
        }
        if rest.starts_with("<![CDATA[") {
            i = skip_to("]]>", start + 9, "CDATA section")?;
            continue;
        }
        if rest.starts_with("<!") {
            return Err(CodecError::syntax(
                "XML with a document type declaration (<!DOCTYPE ...>) or entity declarations is \
                 not accepted: FHIR XML uses no DTD"
                    .to_owned(),
            ));
        }
        if rest.starts_with("<?") {
            i = skip_to("?>", start + 2, "processing instruction")?;
            continue;
        }

        // The tag ends at the first `>` outside a quoted attribute value.
        let mut quote = None;
        let mut end = None;
        for (j, &c) in b.iter().enumerate().skip(start + 1) {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == b'"' || c == b'\'' => quote = Some(c),
                None if c == b'>' => {
                    end = Some(j);
                    break;
                }
                None => {}
            }
        }
        let end =
            end.ok_or_else(|| CodecError::syntax("invalid XML: unterminated tag".to_owned()))?;
        let inner = &text[start + 1..end];
        i = end + 1;
        if let Some(name) = inner.strip_prefix('/') {
            on_tag(Tag::Close {
                name: name.trim_end(),
                span: start..end + 1,
            })?;
        } else {
            let (inner, empty) = match inner.strip_suffix('/') {
                Some(inner) => (inner, true),
                None => (inner, false),
            };
            let name_len = inner
                .find(|c: char| c.is_ascii_whitespace())
                .unwrap_or(inner.len());
            let (name, attrs) = inner.split_at(name_len);
            if name.is_empty() {
                return Err(CodecError::syntax(
                    "invalid XML: a tag without a name".to_owned(),
                ));
            }
            on_tag(Tag::Open {
                name,
                attrs,
                empty,
                span: start..end + 1,
            })?;
        }
    }
    Ok(())
}

/// Checks what fhirbolt's parser would not (DTDs, nesting depth, matching end tags, one root,
/// nothing truncated) and returns the document without its XML declaration, which we check
/// ourselves: fhirbolt rejects the common `encoding="utf-8"` (lower case) and
/// `standalone="yes"`.
fn prescan(text: &str) -> Result<&str, CodecError> {
    let mut stack: Vec<&str> = Vec::new();
    let mut roots = 0;
    scan(text, |tag| {
        match tag {
            Tag::Open { name, empty, .. } => {
                if stack.is_empty() {
                    roots += 1;
                    if roots > 1 {
                        return Err(CodecError::syntax(
                            "invalid XML: more than one root element".to_owned(),
                        ));
                    }
                }
                if !empty {
                    stack.push(name);
                    if stack.len() > MAX_DEPTH {
                        return Err(CodecError::structure(
                            format!("XML is nested deeper than {MAX_DEPTH} levels, which no FHIR resource needs"),
                            None,
                        ));
                    }
                }
            }
            Tag::Close { name, .. } => match stack.pop() {
                Some(open) if open == name => {}
                Some(open) => {
                    return Err(CodecError::syntax(format!(
                        "invalid XML: end tag </{name}> does not match <{open}>"
                    )))
                }
                None => {
                    return Err(CodecError::syntax(format!(
                        "invalid XML: unexpected end tag </{name}>"
                    )))
                }
            },
        }
        Ok(())
    })?;
    if let Some(open) = stack.last() {
        return Err(CodecError::syntax(format!(
            "invalid XML: the document ends before <{open}> is closed"
        )));
    }
    if roots == 0 {
        return Err(CodecError::syntax(
            "invalid XML: no root element".to_owned(),
        ));
    }

    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if let Some(decl) = trimmed
        .strip_prefix("<?xml")
        .filter(|d| d.starts_with(char::is_whitespace))
    {
        let end = decl.find("?>").unwrap_or(decl.len());
        if let Some(encoding) = attribute(&decl[..end], "encoding") {
            if !encoding.eq_ignore_ascii_case("utf-8") {
                return Err(CodecError::syntax(format!(
                    "invalid XML: encoding `{encoding}` is not supported; use UTF-8"
                )));
            }
        }
        return Ok(&decl[(end + 2).min(decl.len())..]);
    }
    Ok(trimmed)
}

/// The (raw, still escaped) value of attribute `name` in the attribute text of a tag.
fn attribute<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = attrs;
    loop {
        rest = rest.trim_start();
        let eq = rest.find('=')?;
        let key = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let close = after[1..].find(quote)?;
        let value = &after[1..1 + close];
        let local = key.rsplit(':').next().unwrap_or(key);
        // `xmlns:value="..."` declares a prefix; it is not a `value` attribute.
        if local == name && (name == "xmlns" || !key.starts_with("xmlns")) {
            return Some(value);
        }
        rest = &after[close + 2..];
    }
}

/// Resolves the predefined entities and character references of an attribute value.
fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('&') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let Some(semi) = after.find(';') else {
            out.push_str(&rest[amp..]);
            return Cow::Owned(out);
        };
        let entity = &after[..semi];
        let ch = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => out.push(c),
            None => out.push_str(&rest[amp..amp + 2 + semi]),
        }
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// What the elements inside the current one are.
#[derive(Clone, Copy)]
enum Frame {
    /// Elements of a resource, datatype or backbone element (`ELEMENT_MAP` key).
    Type(&'static str),
    /// `<contained>`, `<resource>`, `<outcome>`: holds one resource element.
    Resource,
    /// A primitive element: may only contain `<extension>`.
    Primitive,
    /// XHTML of a narrative: not FHIR elements.
    Xhtml,
}

struct Level<'a> {
    frame: Frame,
    /// Length of the path before this element was added to it.
    path_len: usize,
    /// How many of each repeating child were seen, for `[index]`.
    seen: Vec<(&'a str, usize)>,
    /// For a narrative `<div>`: where its start tag begins.
    div_start: Option<usize>,
}

/// Walks FHIR XML with the schema, checking what fhirbolt does not (and saying where): unknown
/// elements and resource types, value attributes on complex elements, and the XML spelling of
/// primitive values. Collects every narrative `<div>` with its FHIRPath and byte range.
///
/// With `bad_values`, a value in the wrong format is added to it (in document order) instead of
/// ending the walk.
fn walk_xml(
    text: &str,
    divs: &mut Vec<(String, Range<usize>)>,
    mut bad_values: Option<&mut Vec<CodecError>>,
) -> Result<(), CodecError> {
    let mut value_checked = |result: Result<(), CodecError>| match (result, &mut bad_values) {
        (Err(e), Some(found)) => {
            found.push(e);
            Ok(())
        }
        (result, _) => result,
    };
    let mut stack: Vec<Level> = Vec::new();
    let mut path = String::new();
    let mut scratch = String::new();
    scan(text, |tag| {
        let (name, attrs, empty, span) = match tag {
            Tag::Close { span, .. } => {
                if let Some(level) = stack.pop() {
                    if let Some(start) = level.div_start {
                        divs.push((path.clone(), start..span.end));
                    }
                    path.truncate(level.path_len);
                }
                return Ok(());
            }
            Tag::Open {
                name,
                attrs,
                empty,
                span,
            } => (name, attrs, empty, span),
        };
        let local = name.rsplit(':').next().unwrap_or(name);
        let path_len = path.len();
        let mut div_start = None;
        let frame = match stack.last_mut() {
            None => {
                let key = resource_element(local, &path)?;
                path.push_str(key);
                Frame::Type(key)
            }
            Some(level) => match level.frame {
                Frame::Xhtml => Frame::Xhtml,
                Frame::Resource => Frame::Type(resource_element(local, &path)?),
                Frame::Primitive if local == "extension" => {
                    let i = next_index(&mut level.seen, local);
                    let _ = write!(path, ".extension[{i}]");
                    Frame::Type("Extension")
                }
                Frame::Primitive => {
                    return Err(walk::unknown_element(&path, local, "a primitive element"))
                }
                Frame::Type("Narrative") if local == "div" => {
                    path.push_str(".div");
                    div_start = Some(span.start);
                    Frame::Xhtml
                }
                Frame::Type(key) => {
                    let Some(child) = schema::child(key, local, &mut scratch) else {
                        return Err(walk::unknown_element(&path, local, key));
                    };
                    walk::push_element(&mut path, local, &child);
                    if child.array {
                        let i = next_index(&mut level.seen, local);
                        let _ = write!(path, "[{i}]");
                    }
                    match child.kind {
                        Kind::Resource => Frame::Resource,
                        Kind::Complex(key) => Frame::Type(key),
                        Kind::Primitive(p) => {
                            if let Some(raw) = attribute(attrs, "value") {
                                value_checked(check_value(p, &unescape(raw), &path))?;
                            }
                            Frame::Primitive
                        }
                    }
                }
            },
        };
        if let Frame::Type(key) = frame {
            if !schema::is_resource(key) && attribute(attrs, "value").is_some() {
                return Err(CodecError::structure(
                    format!("{path} is a {key}, which has no value attribute"),
                    Some(path.clone()),
                ));
            }
            if key == "Extension" {
                if let Some(url) = attribute(attrs, "url") {
                    let mut url_path = path.clone();
                    url_path.push_str(".url");
                    value_checked(check_value(Prim::Uri, &unescape(url), &url_path))?;
                }
            }
        }
        if empty {
            if let Some(start) = div_start {
                divs.push((path.clone(), start..span.end));
            }
            path.truncate(path_len);
        } else {
            stack.push(Level {
                frame,
                path_len,
                seen: Vec::new(),
                div_start,
            });
        }
        Ok(())
    })
}

/// The `ELEMENT_MAP` key of the resource whose element is `<local>`; a resource's path is the
/// path of the element holding it (or its type, at the root).
fn resource_element(local: &str, path: &str) -> Result<&'static str, CodecError> {
    match schema::resource_type(local) {
        Some(key) => Ok(key),
        None if path.is_empty() => Err(CodecError::structure(
            format!("<{local}> is not an R4 resource type"),
            None,
        )),
        None => Err(CodecError::structure(
            format!("{path} must hold a resource, but <{local}> is not an R4 resource type"),
            Some(path.to_owned()),
        )),
    }
}

fn next_index<'a>(seen: &mut Vec<(&'a str, usize)>, name: &'a str) -> usize {
    match seen.iter_mut().find(|(n, _)| *n == name) {
        Some((_, count)) => {
            *count += 1;
            *count - 1
        }
        None => {
            seen.push((name, 1));
            0
        }
    }
}

/// Checks the lexical form of an XML `value` attribute.
fn check_value(p: Prim, s: &str, path: &str) -> Result<(), CodecError> {
    let result = match p {
        Prim::Boolean if s == "true" || s == "false" => Ok(()),
        Prim::Boolean => Err("must be true or false".to_owned()),
        Prim::Integer | Prim::Integer64 | Prim::PositiveInt | Prim::UnsignedInt => {
            check_integer(p, s)
        }
        _ => primitives::check_str(p, s),
    };
    result.map_err(|reason| walk::invalid_value(p, s, path, &reason))
}

fn check_integer(p: Prim, s: &str) -> Result<(), String> {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return Err("must be a whole number without leading zeros".to_owned());
    }
    let n: i64 = s
        .trim_start_matches('+')
        .parse()
        .map_err(|_| "is out of range".to_owned())?;
    let value = serde_json::Value::from(n);
    primitives::check(p, &value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn refuses_dtds_and_entities() {
        let docs = [
            r#"<?xml version="1.0"?><!DOCTYPE Patient [<!ENTITY a "aaaa">]><Patient xmlns="http://hl7.org/fhir"><id value="&a;"/></Patient>"#,
            r#"<!DOCTYPE Patient SYSTEM "file:///etc/passwd"><Patient xmlns="http://hl7.org/fhir"/>"#,
            r#"<Patient xmlns="http://hl7.org/fhir"><!ENTITY x "y"></Patient>"#,
        ];
        for doc in docs {
            let e = parse(doc.as_bytes()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Syntax, "{doc}");
            assert!(e.message.contains("DOCTYPE"), "{}", e.message);
        }
        // The same text inside a comment is harmless.
        let ok = r#"<Patient xmlns="http://hl7.org/fhir"><!-- <!DOCTYPE x> --><active value="true"/></Patient>"#;
        assert!(parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn depth_limit() {
        let deep = format!(
            r#"<Patient xmlns="http://hl7.org/fhir">{}{}</Patient>"#,
            "<extension url=\"http://e\">".repeat(MAX_DEPTH),
            "</extension>".repeat(MAX_DEPTH)
        );
        let e = parse(deep.as_bytes()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Structure);
        assert!(e.message.contains("deeper than 64"), "{}", e.message);
    }

    #[test]
    fn well_formedness() {
        let cases = [
            r#"<Patient xmlns="http://hl7.org/fhir"><active value="true"/>"#,
            r#"<Patient xmlns="http://hl7.org/fhir"><name><family value="x"/></Patient>"#,
            r#"<Patient xmlns="http://hl7.org/fhir"/><Patient xmlns="http://hl7.org/fhir"/>"#,
            r#"<Patient xmlns="http://hl7.org/fhir"><active value="true"</Patient>"#,
            "",
            "not xml",
        ];
        for doc in cases {
            assert_eq!(
                parse(doc.as_bytes()).unwrap_err().kind,
                ErrorKind::Syntax,
                "{doc}"
            );
        }
    }

    #[test]
    fn accepts_declarations_fhirbolt_would_refuse() {
        for decl in [
            r#"<?xml version="1.0" encoding="utf-8"?>"#,
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>"#,
            "\u{feff}<?xml version=\"1.0\"?>\n",
        ] {
            let doc = format!(
                r#"{decl}<Patient xmlns="http://hl7.org/fhir"><active value="true"/></Patient>"#
            );
            assert!(parse(doc.as_bytes()).is_ok(), "{decl}");
        }
        let latin =
            r#"<?xml version="1.0" encoding="ISO-8859-1"?><Patient xmlns="http://hl7.org/fhir"/>"#;
        assert_eq!(parse(latin.as_bytes()).unwrap_err().kind, ErrorKind::Syntax);
    }

    #[test]
    fn diagnoses_fhirbolt_refusals() {
        let e = parse(
            br#"<Patient xmlns="http://hl7.org/fhir"><name><nickname value="x"/></name></Patient>"#,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Structure);
        assert_eq!(e.expression.as_deref(), Some("Patient.name[0].nickname"));

        let e = parse(br#"<Foo xmlns="http://hl7.org/fhir"/>"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Structure);
        assert!(e.message.contains("Foo"), "{}", e.message);

        let e = parse(br#"<Patient xmlns="http://hl7.org/fhir"><active value="yes"/></Patient>"#)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Primitive);
        assert_eq!(e.expression.as_deref(), Some("Patient.active"));

        let e = parse(
            br#"<Observation xmlns="http://hl7.org/fhir"><status value="final"/><code/><valueQuantity><value value="1.x"/></valueQuantity></Observation>"#,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Primitive);
        assert_eq!(
            e.expression.as_deref(),
            Some("Observation.value.ofType(Quantity).value")
        );

        let e = parse(
            br#"<Bundle xmlns="http://hl7.org/fhir"><type value="collection"/><entry><resource><Patient><foo/></Patient></resource></entry></Bundle>"#,
        )
        .unwrap_err();
        assert_eq!(
            e.expression.as_deref(),
            Some("Bundle.entry[0].resource.foo")
        );

        let e = parse(br#"<Patient><active value="true"/></Patient>"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Structure, "{}", e.message);
    }

    #[test]
    fn xml_primitives_are_checked_after_conversion() {
        let e = parse(
            br#"<Patient xmlns="http://hl7.org/fhir"><birthDate value="1990-02-30"/></Patient>"#,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Primitive);
        assert_eq!(e.expression.as_deref(), Some("Patient.birthDate"));
        let e = parse(br#"<Patient xmlns="http://hl7.org/fhir"><telecom><rank value="0"/></telecom></Patient>"#)
            .unwrap_err();
        assert_eq!(e.expression.as_deref(), Some("Patient.telecom[0].rank"));
    }

    #[test]
    fn helpers() {
        assert_eq!(attribute(r#" value="a&amp;b" url='u'"#, "url"), Some("u"));
        assert_eq!(
            attribute(r#" xmlns="http://hl7.org/fhir" value="v""#, "value"),
            Some("v")
        );
        assert_eq!(attribute(r#" id="x""#, "value"), None);
        assert_eq!(unescape("a&amp;b&lt;&#65;&#x42;&bogus;"), "a&b<AB&bogus;");
        assert_eq!(
            compact(b"<?xml version=\"1.0\"?>\n<a>\n  <b value=\"x y\"/>\n  <c>t u</c>\n</a>"),
            b"<?xml version=\"1.0\"?><a><b value=\"x y\"/><c>t u</c></a>".to_vec()
        );
    }

    const DIV: &str = r#"<div xmlns="http://www.w3.org/1999/xhtml"><p>Hello <b>you</b> there, <i>A &amp; B</i></p></div>"#;

    #[test]
    fn narrative_whitespace_survives_xml_input() {
        let xml = format!(
            r#"<Bundle xmlns="http://hl7.org/fhir"><type value="collection"/><entry><resource><Patient><text><status value="generated"/>{DIV}</text></Patient></resource></entry></Bundle>"#
        );
        let v = parse(xml.as_bytes()).unwrap();
        assert_eq!(v["entry"][0]["resource"]["text"]["div"], DIV);
    }

    #[test]
    fn narrative_whitespace_survives_xml_output() {
        let v = serde_json::json!({"resourceType": "Patient", "text": {"status": "generated", "div": DIV},
            "contained": [{"resourceType": "Organization", "text": {"status": "generated", "div": DIV}, "name": "x"}]});
        for pretty in [false, true] {
            let xml = String::from_utf8(serialize(&v, pretty).unwrap()).unwrap();
            assert_eq!(xml.matches(DIV).count(), 2, "pretty={pretty}: {xml}");
            assert_eq!(parse(xml.as_bytes()).unwrap(), v);
        }
        // A div that is not well-formed XHTML is left as fhirbolt renders it: never broken XML.
        let broken = serde_json::json!({"resourceType": "Patient", "text": {"status": "generated",
            "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>a</div>"}});
        if let Ok(xml) = serialize(&broken, false) {
            assert!(prescan(std::str::from_utf8(&xml).unwrap()).is_ok());
        }
    }

    #[test]
    fn fhirpaths_into_json() {
        let v = serde_json::json!({"resourceType": "Bundle", "entry": [{}, {"resource": {"text": {"div": "d"}}}]});
        assert_eq!(
            at_path(&v, "Bundle.entry[1].resource.text.div"),
            Some(&serde_json::json!("d"))
        );
        assert_eq!(at_path(&v, "Bundle.entry[2].resource"), None);
        assert_eq!(at_path(&v, "Bundle.value.ofType(x)"), None);
    }
}
