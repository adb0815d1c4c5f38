//! `multipart/form-data` bodies of the Marketing API proxy: Meta's usual way to upload
//! an ad image (`POST /act_{id}/adimages` with a file part, e.g. curl's
//! `-F 'filename=@photo.png'`, or a `bytes` field of base64), and form fields on any
//! edge. Read with `multer` (the parser behind axum) within a bound on the whole body,
//! on each field and on the number of fields; anything it cannot read is a clear
//! refusal, never a panic.
//!
//! What Graph receives is the same JSON object the one-call creation sends: the file
//! as `bytes` (base64) and its file name as `name` (Meta names the image by it in its
//! answer), the text fields as they are (values that read as JSON objects, arrays or
//! numbers taken as such, like the form-urlencoded path).

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// At most this many parts in one body.
pub const MAX_PARTS: usize = 64;
/// A text field's value: at most this many bytes (an image goes as a file or `bytes`).
pub const MAX_TEXT_FIELD_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MultipartError {
    #[error("multipart/form-data needs a boundary parameter in Content-Type")]
    NoBoundary,
    #[error("the multipart body cannot be read: {0}")]
    Malformed(String),
    #[error("the multipart body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the multipart body has more than {MAX_PARTS} parts")]
    TooManyParts,
    #[error("field {0:?} is longer than {MAX_TEXT_FIELD_BYTES} bytes")]
    FieldTooLong(String),
    #[error("field {0:?} is not UTF-8 text")]
    NotText(String),
    #[error("field {0:?} appears twice")]
    Repeated(String),
    #[error("a file upload is accepted on adimages only")]
    FileNotAllowed,
    #[error("one image per request: the body has two files, or a file and a bytes field")]
    TwoImages,
    #[error("the image file is empty")]
    EmptyFile,
    #[error("bytes is not valid base64")]
    BadBase64,
}

/// Whether a Content-Type is `multipart/form-data`.
pub fn is_multipart(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// The fields of a multipart body as Graph takes them. `allow_file`: the edge takes an
/// image (`adimages`).
pub async fn graph_fields(
    body: &[u8],
    content_type: &str,
    limit: usize,
    allow_file: bool,
) -> Result<Map<String, Value>, MultipartError> {
    if body.len() > limit {
        return Err(MultipartError::TooLarge(limit));
    }
    let boundary = multer::parse_boundary(content_type).map_err(|_| MultipartError::NoBoundary)?;
    let data = bytes::Bytes::copy_from_slice(body);
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(data) });
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limit as u64)
            .per_field(limit as u64),
    );
    let mut mp = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut out = Map::new();
    let mut parts = 0usize;
    let mut file: Option<(String, Vec<u8>)> = None;
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(read_error(e, limit)),
        };
        parts += 1;
        if parts > MAX_PARTS {
            return Err(MultipartError::TooManyParts);
        }
        let name = field.name().unwrap_or_default().to_string();
        if name.is_empty() || name.len() > 100 {
            return Err(MultipartError::Malformed(
                "every part needs a field name of 1 to 100 characters".into(),
            ));
        }
        let file_name = field.file_name().map(str::to_string);
        let data = field.bytes().await.map_err(|e| read_error(e, limit))?;
        if let Some(file_name) = file_name {
            if !allow_file {
                return Err(MultipartError::FileNotAllowed);
            }
            if file.is_some() {
                return Err(MultipartError::TwoImages);
            }
            if data.is_empty() {
                return Err(MultipartError::EmptyFile);
            }
            // Meta names the image by its file name; the field name when it has none.
            let shown = file_name.rsplit(['/', '\\']).next().unwrap_or_default();
            let shown = if shown.is_empty() || shown.len() > 100 {
                name.clone()
            } else {
                shown.to_string()
            };
            file = Some((shown, data.to_vec()));
            continue;
        }
        if data.len() > MAX_TEXT_FIELD_BYTES && name != "bytes" {
            return Err(MultipartError::FieldTooLong(name));
        }
        let text =
            String::from_utf8(data.to_vec()).map_err(|_| MultipartError::NotText(name.clone()))?;
        if out.contains_key(&name) {
            return Err(MultipartError::Repeated(name));
        }
        // `bytes` is always the image's base64 text (a digit string is no number).
        let parsed = serde_json::from_str::<Value>(&text)
            .ok()
            .filter(|x| name != "bytes" && (x.is_object() || x.is_array() || x.is_number()));
        out.insert(name, parsed.unwrap_or_else(|| json!(text)));
    }
    if let Some(Value::String(b)) = out.get("bytes") {
        if !allow_file {
            return Err(MultipartError::FileNotAllowed);
        }
        if base64::engine::general_purpose::STANDARD
            .decode(b.trim().as_bytes())
            .is_err()
        {
            return Err(MultipartError::BadBase64);
        }
    }
    if let Some((file_name, data)) = file {
        if out.contains_key("bytes") {
            return Err(MultipartError::TwoImages);
        }
        out.insert(
            "bytes".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(data)),
        );
        out.entry("name").or_insert(json!(file_name));
    }
    Ok(out)
}

fn read_error(e: multer::Error, limit: usize) -> MultipartError {
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            MultipartError::TooLarge(limit)
        }
        other => MultipartError::Malformed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "multipart/form-data; boundary=XyZ";

    fn body(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        for (name, file, data) in parts {
            b.extend_from_slice(b"--XyZ\r\n");
            match file {
                Some(f) => b.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: image/png\r\n\r\n").as_bytes(),
                ),
                None => b.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            b.extend_from_slice(data);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"--XyZ--\r\n");
        b
    }

    async fn read(b: &[u8], allow_file: bool) -> Result<Map<String, Value>, MultipartError> {
        graph_fields(b, CT, 1024, allow_file).await
    }

    #[tokio::test]
    async fn a_file_becomes_bytes_and_name() {
        let png = b"\x89PNG\r\n\x1a\n\0\0";
        let m = read(&body(&[("filename", Some("/tmp/diwali.png"), png)]), true)
            .await
            .unwrap();
        assert_eq!(
            m["bytes"],
            base64::engine::general_purpose::STANDARD.encode(png)
        );
        assert_eq!(m["name"], "diwali.png");
        // A bytes field as Meta takes it; text fields read like a form.
        let m = read(
            &body(&[
                ("bytes", None, b"aGVsbG8="),
                ("limit", None, b"5"),
                ("x", None, b"ab"),
            ]),
            true,
        )
        .await
        .unwrap();
        assert_eq!(m["bytes"], "aGVsbG8=");
        assert_eq!(m["limit"], 5);
        assert_eq!(m["x"], "ab");
    }

    #[tokio::test]
    async fn hostile_bodies_are_refused() {
        let png: &[u8] = b"img";
        for (b, allow, want) in [
            (
                body(&[("f", Some("a.png"), png)]),
                false,
                MultipartError::FileNotAllowed,
            ),
            (
                body(&[("bytes", None, b"aGk=")]),
                false,
                MultipartError::FileNotAllowed,
            ),
            (
                body(&[("f", Some("a.png"), png), ("g", Some("b.png"), png)]),
                true,
                MultipartError::TwoImages,
            ),
            (
                body(&[("f", Some("a.png"), png), ("bytes", None, b"aGk=")]),
                true,
                MultipartError::TwoImages,
            ),
            (
                body(&[("f", Some("a.png"), b"")]),
                true,
                MultipartError::EmptyFile,
            ),
            (
                body(&[("bytes", None, b"@@@")]),
                true,
                MultipartError::BadBase64,
            ),
            // Found by the fuzz target: digits read as a number slipped past both checks.
            (
                body(&[("bytes", None, b"5")]),
                false,
                MultipartError::FileNotAllowed,
            ),
            (
                body(&[("bytes", None, b"12")]),
                true,
                MultipartError::BadBase64,
            ),
            (
                body(&[("a", None, b"1"), ("a", None, b"2")]),
                true,
                MultipartError::Repeated("a".into()),
            ),
            (
                body(&[("a", None, b"\xff\xfe")]),
                true,
                MultipartError::NotText("a".into()),
            ),
            (vec![b'x'; 2000], true, MultipartError::TooLarge(1024)),
        ] {
            assert_eq!(read(&b, allow).await.unwrap_err(), want);
        }
        let many: Vec<(String, Option<&str>, &[u8])> = (0..=MAX_PARTS)
            .map(|i| (format!("f{i}"), None, b"1" as &[u8]))
            .collect();
        let many: Vec<(&str, Option<&str>, &[u8])> =
            many.iter().map(|(n, f, d)| (n.as_str(), *f, *d)).collect();
        assert_eq!(
            graph_fields(&body(&many), CT, 1 << 20, true)
                .await
                .unwrap_err(),
            MultipartError::TooManyParts
        );
        // No boundary, garbage, a body cut short: refused, never a panic.
        assert_eq!(
            graph_fields(b"", "multipart/form-data", 1024, true)
                .await
                .unwrap_err(),
            MultipartError::NoBoundary
        );
        for junk in [
            &b"garbage"[..],
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated",
            b"--XyZ\r\n\r\n\r\n--XyZ--\r\n",
        ] {
            assert!(read(junk, true).await.is_err(), "{junk:?}");
        }
    }

    #[test]
    fn content_types() {
        assert!(is_multipart("multipart/form-data; boundary=a"));
        assert!(is_multipart("Multipart/Form-Data;boundary=a"));
        assert!(!is_multipart("application/json"));
        assert!(!is_multipart("multipart/mixed; boundary=a"));
    }
}
