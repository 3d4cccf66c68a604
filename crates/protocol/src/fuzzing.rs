//! The `decode_client` fuzz target, written once: the `cargo fuzz` binary in
//! `crates/protocol/fuzz` and the stable tests (`tests/fuzz_corpus.rs`) both call
//! [`decode_client`] here. Not part of the protocol's API.
//!
//! Each input is the payload of one WebSocket frame. The checks are the promises
//! of `docs/protocol.md` that decoding alone decides:
//!
//! * decoding never panics, whatever the bytes and whatever their length;
//! * a frame larger than [`MAX_FRAME_BYTES`] is refused before decoding
//!   ([`Verdict::TooBig`], close 1009), and bytes that are not UTF-8 are not a
//!   text frame ([`Verdict::NotText`]); both are still decoded (lossily) to show
//!   that no input can make the decoder panic;
//! * a refusal is `bad_frame` or `unknown_type`, never anything else, with a
//!   message; `unknown_type` exactly when the input is one JSON object (with one
//!   `type` key) whose `type` is a string this version does not know;
//! * what decodes is one JSON object whose `type` is the frame's, one of
//!   [`ClientFrame::KNOWN_TYPES`], naming the conversation it decoded to, with
//!   an object (not an array) wherever the frame has a nested object;
//! * what decodes survives a round trip: encoding the frame and decoding that
//!   gives the same frame, and encoding again gives the same text;
//! * unknown fields are ignored, at the top level and in nested objects, and an
//!   optional field sent as `null` means the same as one left out.

use crate::limits::MAX_FRAME_BYTES;
use crate::{ClientFrame, DecodeError, ErrorCode};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// What the server does with one frame of these bytes, as far as this crate decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Larger than [`MAX_FRAME_BYTES`]: the connection closes with 1009 unread.
    TooBig,
    /// Not UTF-8, so not a text frame: the WebSocket layer refuses it.
    NotText,
    /// Decoded into a frame.
    Frame(ClientFrame),
    /// Refused with an `error` frame.
    Refused(DecodeError),
}

/// Runs the target on one input. `Err` names the promise broken; a panic is a
/// failure too.
pub fn decode_client(data: &[u8]) -> Result<Verdict, String> {
    // Decoded whatever the gateway would do with it first: the decoder itself
    // promises never to panic, whatever the input.
    let lossy = String::from_utf8_lossy(data);
    let decoded = check(&lossy)?;
    if data.len() > MAX_FRAME_BYTES {
        return Ok(Verdict::TooBig);
    }
    if std::str::from_utf8(data).is_err() {
        return Ok(Verdict::NotText);
    }
    Ok(match decoded {
        Ok(frame) => Verdict::Frame(frame),
        Err(e) => Verdict::Refused(e),
    })
}

/// Decodes `text` and checks every promise about the result.
fn check(text: &str) -> Result<Result<ClientFrame, DecodeError>, String> {
    let decoded = crate::decode_client(text);
    match &decoded {
        Ok(frame) => check_frame(text, frame)?,
        Err(e) => check_refusal(text, e)?,
    }
    Ok(decoded)
}

fn check_refusal(text: &str, e: &DecodeError) -> Result<(), String> {
    if e.message.is_empty() {
        return Err(format!("{:?} without a message", e.code));
    }
    // Judged on the JSON grammar, as the decoder reads an unknown frame: the
    // values of other fields are skipped, not converted (a number too large for
    // an f64 or a lone surrogate escape is still well-formed JSON).
    let unknown_type = match serde_json::from_str::<Shape>(text) {
        Ok(shape) => match shape.kinds.as_slice() {
            [Value::String(kind)] => !ClientFrame::KNOWN_TYPES.contains(&kind.as_str()),
            _ => false,
        },
        Err(_) => false,
    };
    match e.code {
        ErrorCode::UnknownType if !unknown_type => Err(format!(
            "unknown_type for a frame that is not one object with an unknown type: {}",
            e.message
        )),
        ErrorCode::BadFrame if unknown_type => Err(format!(
            "bad_frame for a well-formed frame of an unknown type: {}",
            e.message
        )),
        ErrorCode::UnknownType | ErrorCode::BadFrame => Ok(()),
        other => Err(format!("decoding refused with {other:?}")),
    }
}

fn check_frame(text: &str, frame: &ClientFrame) -> Result<(), String> {
    let kind = frame.type_name();
    if !ClientFrame::KNOWN_TYPES.contains(&kind) {
        return Err(format!("decoded a {kind} frame, which is not a known type"));
    }
    let object = one_object(text)
        .ok_or_else(|| format!("decoded a {kind} frame from text that is not one JSON object"))?;
    if object.get("type") != Some(&Value::String(kind.to_owned())) {
        return Err(format!(
            "decoded a {kind} frame from {:?}",
            object.get("type")
        ));
    }
    // Objects stay objects: no nested object of the frame may come from an array.
    let mut shapes = Vec::new();
    let value = serde_json::to_value(frame).map_err(|e| e.to_string())?;
    objects(&value, &mut Vec::new(), &mut shapes);
    let mut input = Value::Object(object.clone());
    for path in shapes {
        if at(&mut input, &path).is_none() {
            return Err(format!(
                "decoded a {kind} frame whose {path:?} is not an object"
            ));
        }
    }
    if let Some(id) = frame.conversation() {
        let named = object.get("conversation").and_then(Value::as_str);
        if named.and_then(|s| s.parse().ok()) != Some(id) {
            return Err(format!("decoded conversation {id} from {named:?}"));
        }
    }

    // Round trip: what a client library encodes, the server decodes to the same.
    let encoded = serde_json::to_string(frame).map_err(|e| format!("cannot encode: {e}"))?;
    let again = crate::decode_client(&encoded)
        .map_err(|e| format!("re-encoded {kind} frame refused: {}: {encoded}", e.message))?;
    if &again != frame {
        return Err(format!("round trip changed {frame:?} into {again:?}"));
    }
    let encoded_again = serde_json::to_string(&again).map_err(|e| e.to_string())?;
    if encoded_again != encoded {
        return Err(format!(
            "encoding is not stable: {encoded} then {encoded_again}"
        ));
    }

    // Unknown fields are ignored, at the top level and in every nested object;
    // optional fields may be null or absent alike.
    for variant in variants(&value) {
        let text = variant.to_string();
        match crate::decode_client(&text) {
            Ok(decoded) if &decoded == frame => {}
            Ok(decoded) => return Err(format!("{text} decoded to {decoded:?}, not {frame:?}")),
            Err(e) => return Err(format!("{text} refused: {}", e.message)),
        }
    }
    Ok(())
}

/// The encodings of the same frame that the protocol says mean the same thing:
/// with an unknown field added to each object, and with each `null` field left out.
fn variants(value: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let mut paths = Vec::new();
    objects(value, &mut Vec::new(), &mut paths);
    for path in paths {
        let mut with_unknown = value.clone();
        if let Some(object) = at(&mut with_unknown, &path) {
            let mut key = String::from("x_fuzz_unknown");
            while object.contains_key(&key) {
                key.push('_');
            }
            object.insert(key, serde_json::json!([1, {"type": "ping"}, null]));
            out.push(with_unknown);
        }
        let nulls: Vec<String> = match at(&mut value.clone(), &path) {
            Some(object) => object
                .iter()
                .filter(|(_, v)| v.is_null())
                .map(|(k, _)| k.clone())
                .collect(),
            None => Vec::new(),
        };
        for key in nulls {
            let mut without = value.clone();
            if let Some(object) = at(&mut without, &path) {
                object.remove(&key);
                out.push(without);
            }
        }
    }
    out
}

/// The paths (keys from the root) of every object in `value`.
fn objects(value: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Value::Object(map) = value {
        out.push(path.clone());
        for (key, inner) in map {
            path.push(key.clone());
            objects(inner, path, out);
            path.pop();
        }
    }
}

fn at<'a>(value: &'a mut Value, path: &[String]) -> Option<&'a mut Map<String, Value>> {
    let mut here = value;
    for key in path {
        here = here.as_object_mut()?.get_mut(key)?;
    }
    here.as_object_mut()
}

/// `text` as one JSON object with one `type` key, if it is one.
fn one_object(text: &str) -> Option<Map<String, Value>> {
    let Value::Object(object) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    let shape = serde_json::from_str::<Shape>(text).ok()?;
    (shape.kinds.len() == 1).then_some(object)
}

/// A JSON object read at the grammar level: the value of every `type` key (a
/// repeated key gives several), every other value skipped unconverted.
struct Shape {
    kinds: Vec<Value>,
}

impl<'de> serde::Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ShapeVisitor;
        impl<'de> Visitor<'de> for ShapeVisitor {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
                let mut kinds = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "type" {
                        kinds.push(map.next_value::<Value>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Shape { kinds })
            }
        }
        deserializer.deserialize_map(ShapeVisitor)
    }
}
