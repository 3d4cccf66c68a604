//! The wire format: spelling of frames, decoding errors, and that no input makes
//! the decoder panic.
#![allow(missing_docs)]

use pitboss_protocol::*;
use proptest::prelude::*;
use serde_json::json;

#[test]
fn client_frames_decode_from_their_documented_json() {
    let hello =
        decode_client(r#"{"type":"hello","protocol":1,"auth":{"kind":"visitor"}}"#).unwrap();
    assert_eq!(
        hello,
        ClientFrame::Hello {
            protocol: 1,
            auth: Auth::Visitor {
                token: None,
                name: None,
                language: None
            }
        }
    );
    let id = ConversationId::new();
    let send = decode_client(
        &json!({"type":"send","conversation":id,"client_id":"c1","text":"hi"}).to_string(),
    )
    .unwrap();
    assert_eq!(
        send,
        ClientFrame::Send {
            conversation: id,
            client_id: "c1".into(),
            text: "hi".into()
        }
    );
    let transfer = decode_client(
        &json!({"type":"transfer","conversation":id,"to":{"department":"payments"}}).to_string(),
    )
    .unwrap();
    assert_eq!(
        transfer,
        ClientFrame::Transfer {
            conversation: id,
            to: TransferTarget::Department("payments".into()),
            note: None
        }
    );
    assert_eq!(
        decode_client(r#"{"type":"history"}"#).unwrap(),
        ClientFrame::History
    );
    assert_eq!(
        decode_client(r#"{"type":"ping"}"#).unwrap(),
        ClientFrame::Ping
    );
    assert_eq!(
        decode_client(r#"{"type":"set_status","status":"away"}"#).unwrap(),
        ClientFrame::SetStatus {
            status: AgentStatus::Away
        }
    );
    // Unknown fields are ignored, so newer clients can add optional ones.
    assert!(decode_client(r#"{"type":"ping","extra":true}"#).is_ok());
}

#[test]
fn every_known_type_is_listed_and_named_consistently() {
    let id = ConversationId::new();
    let samples = [
        json!({"type":"hello","protocol":1,"auth":{"kind":"agent","token":"t"}}),
        json!({"type":"start"}),
        json!({"type":"send","conversation":id,"client_id":"a","text":"b"}),
        json!({"type":"note","conversation":id,"client_id":"a","text":"b"}),
        json!({"type":"typing","conversation":id,"active":true}),
        json!({"type":"read","conversation":id,"seq":3}),
        json!({"type":"resume","conversation":id,"after":0}),
        json!({"type":"close","conversation":id}),
        json!({"type":"rate","conversation":id,"score":5}),
        json!({"type":"history"}),
        json!({"type":"sign_out"}),
        json!({"type":"set_status","status":"online"}),
        json!({"type":"accept","conversation":id}),
        json!({"type":"decline","conversation":id}),
        json!({"type":"transfer","conversation":id,"to":{"agent":"ayla"}}),
        json!({"type":"take","conversation":id}),
        json!({"type":"ping"}),
    ];
    assert_eq!(samples.len(), ClientFrame::KNOWN_TYPES.len());
    for sample in samples {
        let frame = decode_client(&sample.to_string()).unwrap();
        assert_eq!(frame.type_name(), sample["type"].as_str().unwrap());
        assert!(ClientFrame::KNOWN_TYPES.contains(&frame.type_name()));
    }
}

#[test]
fn bad_json_and_unknown_types_are_told_apart() {
    assert_eq!(
        decode_client("{nope").unwrap_err().code,
        ErrorCode::BadFrame
    );
    assert_eq!(
        decode_client(r#"{"type":"fly"}"#).unwrap_err().code,
        ErrorCode::UnknownType
    );
    // A known type with a missing field is a bad frame, not an unknown type.
    assert_eq!(
        decode_client(r#"{"type":"send"}"#).unwrap_err().code,
        ErrorCode::BadFrame
    );
    assert_eq!(
        decode_client(r#"[1,2]"#).unwrap_err().code,
        ErrorCode::BadFrame
    );
    assert_eq!(
        decode_client(r#"{"type":7}"#).unwrap_err().code,
        ErrorCode::BadFrame
    );
}

#[test]
fn server_frames_use_the_documented_spelling() {
    let id = ConversationId::new();
    let ack = encode_server(&ServerFrame::Ack {
        conversation: id,
        client_id: "c".into(),
        seq: 4,
        prev: 3,
        duplicate: false,
    });
    let v: serde_json::Value = serde_json::from_str(&ack).unwrap();
    assert_eq!(
        v,
        json!({"type":"ack","conversation":id,"client_id":"c","seq":4,"prev":3,"duplicate":false})
    );
    let err = encode_server(&ServerFrame::error(ErrorCode::TokenExpired, "x"));
    let v: serde_json::Value = serde_json::from_str(&err).unwrap();
    assert_eq!(
        v,
        json!({"type":"error","code":"token_expired","message":"x"})
    );
    for code in [
        ErrorCode::BadFrame,
        ErrorCode::TooManyConversations,
        ErrorCode::InvalidState,
    ] {
        let json = serde_json::to_value(code).unwrap();
        assert_eq!(json, json!(code.as_str()));
    }
    assert_eq!(CloseCode::SlowConsumer.code(), 4008);
    assert_eq!(CloseCode::Restart.code(), 1012);
}

proptest! {
    #[test]
    fn decoding_arbitrary_text_never_panics(text in ".{0,400}") {
        let _ = decode_client(&text);
    }

    #[test]
    fn decoding_json_shaped_noise_never_panics(
        ty in prop::sample::select(ClientFrame::KNOWN_TYPES.to_vec()),
        key in "[a-z_]{1,12}",
        value in prop_oneof![Just(json!(null)), any::<i64>().prop_map(|n| json!(n)), ".{0,20}".prop_map(|s| json!(s))],
    ) {
        let text = json!({"type": ty, key: value}).to_string();
        let _ = decode_client(&text);
    }

    #[test]
    fn text_survives_a_round_trip(text in "\\PC{0,200}") {
        let id = ConversationId::new();
        let frame = ClientFrame::Send { conversation: id, client_id: "x".into(), text: text.clone() };
        let encoded = serde_json::to_string(&frame).unwrap();
        prop_assert_eq!(decode_client(&encoded).unwrap(), frame);
    }
}
