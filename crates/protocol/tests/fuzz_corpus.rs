//! The `decode_client` fuzz target on the stable toolchain: every input of the
//! committed corpus (`fuzz/corpus/decode_client`), every client frame example in
//! `docs/protocol.md`, and a bounded number of random and mutated inputs from a
//! fixed seed, each run through `pitboss_protocol::fuzzing::decode_client`.
//! Beside them, property tests: every `ClientFrame` survives encode → decode,
//! and every `ServerFrame` survives `encode_server` → decode.
//!
//! More random inputs: `PITBOSS_FUZZ_INPUTS=1000000 cargo test -p
//! pitboss-protocol --release --test fuzz_corpus`. Rewrite the seed files:
//! `cargo test -p pitboss-protocol --test fuzz_corpus -- --ignored write_seed_corpus`.
#![allow(missing_docs)]

use pitboss_protocol::fuzzing::{decode_client as target, Verdict};
use pitboss_protocol::limits::MAX_FRAME_BYTES;
use pitboss_protocol::*;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// What `C` stands for in the documentation's examples.
const C: &str = "01a204a0-883a-742a-8725-65cf37a7dc77";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_client")
}

fn corpus() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(corpus_dir())
        .expect("the committed corpus")
        .map(|e| {
            let path = e.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file");
            (path, data)
        })
        .collect();
    files.sort();
    files
}

/// Runs one input, turning a panic into an error that names the input.
fn run(name: &str, data: &[u8]) -> Result<Verdict, String> {
    match std::panic::catch_unwind(|| target(data)) {
        Ok(Ok(verdict)) => Ok(verdict),
        Ok(Err(broken)) => Err(format!(
            "{name}: {broken}\ninput: {:?}",
            String::from_utf8_lossy(data)
        )),
        Err(_) => Err(format!(
            "{name}: panicked\ninput: {:?}",
            String::from_utf8_lossy(data)
        )),
    }
}

/// SplitMix64: a fixed, dependency-free source of random inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Bytes that JSON is made of, so that random inputs get past the first byte.
const JSONISH: &[u8] =
    br#"{}[]":,0123456789-+.eE \ntruefalsenull\u00"type"ping"send"hello"conversation"#;

/// A corpus input changed a little, the way a fuzzer would.
fn mutate(rng: &mut Rng, data: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    for _ in 0..1 + rng.below(4) {
        let byte = if rng.below(2) == 0 {
            JSONISH[rng.below(JSONISH.len())]
        } else {
            rng.next() as u8
        };
        match rng.below(4) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = byte;
            }
            1 => {
                let i = rng.below(out.len() + 1);
                out.insert(i, byte);
            }
            2 if !out.is_empty() => {
                let i = rng.below(out.len());
                out.remove(i);
            }
            _ if !other.is_empty() => {
                let from = rng.below(other.len());
                let len = rng.below(other.len() - from) + 1;
                let at = rng.below(out.len() + 1);
                out.splice(at..at, other[from..from + len].iter().copied());
            }
            _ => {}
        }
    }
    out
}

fn random_inputs() -> usize {
    std::env::var("PITBOSS_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

#[test]
fn every_corpus_input_keeps_every_promise() {
    let corpus = corpus();
    assert!(!corpus.is_empty(), "the corpus is committed");
    let mut types = BTreeSet::new();
    let mut refusals = BTreeSet::new();
    let (mut too_big, mut not_text) = (false, false);
    let mut failures = Vec::new();
    for (path, data) in &corpus {
        match run(&path.display().to_string(), data) {
            Ok(Verdict::Frame(frame)) => {
                types.insert(frame.type_name());
            }
            Ok(Verdict::Refused(e)) => {
                refusals.insert(e.code.as_str());
            }
            Ok(Verdict::TooBig) => too_big = true,
            Ok(Verdict::NotText) => not_text = true,
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The corpus reaches every corner: every frame type, both refusals, and the
    // frames the gateway turns away before decoding.
    let known: BTreeSet<&str> = ClientFrame::KNOWN_TYPES.iter().copied().collect();
    assert_eq!(types, known, "frame types the corpus decodes");
    assert_eq!(
        refusals,
        BTreeSet::from(["bad_frame", "unknown_type"]),
        "refusals in the corpus"
    );
    assert!(
        too_big && not_text,
        "the corpus has an oversize and a non-UTF-8 input"
    );
}

#[test]
fn random_and_mutated_inputs_keep_every_promise() {
    let corpus = corpus();
    let mut rng = Rng(0x00c0_ffee_5eed);
    let mut failures = Vec::new();
    for n in 0..random_inputs() {
        let data: Vec<u8> = if n % 4 == 0 || corpus.is_empty() {
            let len = rng.below(256);
            (0..len)
                .map(|_| match rng.below(2) {
                    0 => JSONISH[rng.below(JSONISH.len())],
                    _ => rng.next() as u8,
                })
                .collect()
        } else {
            let a = &corpus[rng.below(corpus.len())].1;
            let b = &corpus[rng.below(corpus.len())].1;
            mutate(&mut rng, a, b)
        };
        if let Err(e) = run(&format!("random input {n}"), &data) {
            failures.push(e);
            if failures.len() == 3 {
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn frames_at_and_over_the_size_limit() {
    let frame = |len: usize| {
        let head = format!(r#"{{"type":"send","conversation":"{C}","client_id":"c","text":""#);
        let mut text = head.clone();
        text.push_str(&"x".repeat(len - head.len() - 2));
        text.push_str(r#""}"#);
        assert_eq!(text.len(), len);
        text
    };
    assert!(matches!(
        run("at the limit", frame(MAX_FRAME_BYTES).as_bytes()),
        Ok(Verdict::Frame(ClientFrame::Send { .. }))
    ));
    assert_eq!(
        run("one byte over", frame(MAX_FRAME_BYTES + 1).as_bytes()),
        Ok(Verdict::TooBig)
    );
    // Far larger, and deeply nested: still no panic (serde_json's recursion
    // limit refuses the nesting).
    let deep = format!(
        r#"{{"type":"ping","x":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(run("deep", deep.as_bytes()), Ok(Verdict::TooBig));
    assert_eq!(
        decode_client(&deep).unwrap_err().code,
        ErrorCode::BadFrame,
        "too deep to be read"
    );
}

/// A client frame example from `docs/protocol.md`, and what the docs say the
/// server answers it with when that is a decoding error.
struct DocExample {
    line: usize,
    frame: String,
    refused_with: Option<ErrorCode>,
}

fn doc_examples() -> Vec<DocExample> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol.md");
    let doc = std::fs::read_to_string(path).expect("docs/protocol.md");
    let lines: Vec<&str> = doc.lines().collect();
    let mut out = Vec::new();
    let mut in_json = false;
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("```") {
            in_json = line.trim() == "```json";
            continue;
        }
        // Worked examples: `name > {...}` or `> {...}`, the answer on the next line.
        let sent = line
            .split_once("> ")
            .filter(|(who, rest)| {
                rest.starts_with('{')
                    && who
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '#' || c == ' ')
            })
            .map(|(_, rest)| rest);
        let frame = match sent {
            Some(frame) => frame,
            None if in_json && line.starts_with(r#"{"type":""#) => line,
            None => continue,
        };
        if frame.contains("{...}") {
            continue; // a placeholder, not a frame
        }
        // Only client frames: a json block also shows server frames.
        let kind = frame
            .strip_prefix(r#"{"type":""#)
            .and_then(|rest| rest.split('"').next());
        if sent.is_none() && !kind.is_some_and(|k| ClientFrame::KNOWN_TYPES.contains(&k)) {
            continue;
        }
        let answer = lines.get(i + 1).copied().unwrap_or_default();
        let refused_with = [ErrorCode::BadFrame, ErrorCode::UnknownType]
            .into_iter()
            .find(|code| answer.contains(&format!(r#""code":"{}""#, code.as_str())));
        out.push(DocExample {
            line: i + 1,
            frame: frame.replace(r#""C""#, &format!("\"{C}\"")),
            refused_with,
        });
    }
    out
}

#[test]
fn every_client_frame_in_the_docs_decodes_as_documented() {
    let examples = doc_examples();
    assert!(examples.len() >= 30, "found {} examples", examples.len());
    for example in examples {
        let name = format!("docs/protocol.md:{}", example.line);
        let verdict = run(&name, example.frame.as_bytes()).unwrap();
        match (example.refused_with, verdict) {
            (None, Verdict::Frame(_)) => {}
            (Some(code), Verdict::Refused(e)) if e.code == code => {}
            (expected, verdict) => {
                panic!(
                    "{name}: {} gave {verdict:?}, expected {expected:?}",
                    example.frame
                )
            }
        }
    }
}

/// Inputs at the edges of the format, for the seed corpus.
fn edge_cases() -> Vec<(&'static str, Vec<u8>)> {
    let s = |t: &str| t.replace("$C", C).into_bytes();
    let mut out = vec![
        ("empty", Vec::new()),
        ("whitespace", s(" \t\r\n")),
        ("empty-object", s("{}")),
        ("null", s("null")),
        ("array", s("[]")),
        ("array-ping", s(r#"["ping"]"#)),
        ("array-unknown", s(r#"["fly"]"#)),
        ("type-null", s(r#"{"type":null}"#)),
        ("type-number", s(r#"{"type":7}"#)),
        ("type-case", s(r#"{"type":"PING"}"#)),
        ("type-twice", s(r#"{"type":"ping","type":"ping"}"#)),
        ("type-twice-unknown", s(r#"{"type":"fly","type":"fly"}"#)),
        ("unknown-type-dup-field", s(r#"{"type":"fly","a":1,"a":2}"#)),
        ("type-escaped", s(r#"{"typ\u0065":"p\u0069ng"}"#)),
        ("trailing", s(r#"{"type":"ping"} x"#)),
        ("two-objects", s(r#"{"type":"ping"}{"type":"ping"}"#)),
        ("bom", b"\xef\xbb\xbf{\"type\":\"ping\"}".to_vec()),
        (
            "not-utf8",
            b"{\"type\":\"send\",\"text\":\"\xff\xfe\"}".to_vec(),
        ),
        (
            "unknown-field",
            s(r#"{"type":"ping","extra":{"type":"hello"}}"#),
        ),
        (
            "seq-max",
            s(r#"{"type":"read","conversation":"$C","seq":18446744073709551615}"#),
        ),
        (
            "seq-over",
            s(r#"{"type":"read","conversation":"$C","seq":18446744073709551616}"#),
        ),
        (
            "seq-negative",
            s(r#"{"type":"resume","conversation":"$C","after":-1}"#),
        ),
        (
            "seq-minus-zero",
            s(r#"{"type":"resume","conversation":"$C","after":-0}"#),
        ),
        (
            "seq-float",
            s(r#"{"type":"resume","conversation":"$C","after":1.0}"#),
        ),
        (
            "seq-exponent",
            s(r#"{"type":"resume","conversation":"$C","after":1e3}"#),
        ),
        (
            "score-256",
            s(r#"{"type":"rate","conversation":"$C","score":256}"#),
        ),
        (
            "score-comment-null",
            s(r#"{"type":"rate","conversation":"$C","score":5,"comment":null}"#),
        ),
        (
            "uuid-upper",
            s(r#"{"type":"accept","conversation":"01A204A0-883A-742A-8725-65CF37A7DC77"}"#),
        ),
        (
            "uuid-simple",
            s(r#"{"type":"decline","conversation":"01a204a0883a742a872565cf37a7dc77"}"#),
        ),
        (
            "uuid-urn",
            s(r#"{"type":"take","conversation":"urn:uuid:$C"}"#),
        ),
        ("uuid-braced", s(r#"{"type":"take","conversation":"{$C}"}"#)),
        ("uuid-bad", s(r#"{"type":"take","conversation":"C"}"#)),
        (
            "text-escapes",
            s(
                r#"{"type":"send","conversation":"$C","client_id":"\u0000","text":"\ud83d\ude00\n\"\\\/\u2028"}"#,
            ),
        ),
        (
            "text-lone-surrogate",
            s(r#"{"type":"send","conversation":"$C","client_id":"c","text":"\ud800"}"#),
        ),
        (
            "note",
            s(r#"{"type":"note","conversation":"$C","client_id":"n-1","text":"private"}"#),
        ),
        (
            "typing",
            s(r#"{"type":"typing","conversation":"$C","active":false}"#),
        ),
        (
            "typing-string-bool",
            s(r#"{"type":"typing","conversation":"$C","active":"true"}"#),
        ),
        (
            "start-null",
            s(r#"{"type":"start","department":null,"language":null}"#),
        ),
        ("history", s(r#"{"type":"history"}"#)),
        (
            "set-status-offline",
            s(r#"{"type":"set_status","status":"offline"}"#),
        ),
        (
            "set-status-busy",
            s(r#"{"type":"set_status","status":"busy"}"#),
        ),
        (
            "close-reason",
            s(r#"{"type":"close","conversation":"$C","reason":"resolved"}"#),
        ),
        (
            "transfer-both",
            s(r#"{"type":"transfer","conversation":"$C","to":{"agent":"a","department":"d"}}"#),
        ),
        (
            "transfer-neither",
            s(r#"{"type":"transfer","conversation":"$C","to":{"team":"x"}}"#),
        ),
        (
            "transfer-extra-key",
            s(r#"{"type":"transfer","conversation":"$C","to":{"agent":"boris","note":1}}"#),
        ),
        (
            "transfer-null-agent",
            s(
                r#"{"type":"transfer","conversation":"$C","to":{"agent":null,"department":"payments"}}"#,
            ),
        ),
        (
            "transfer-agent-twice",
            s(r#"{"type":"transfer","conversation":"$C","to":{"agent":"a","agent":"b"}}"#),
        ),
        (
            "transfer-array",
            s(r#"{"type":"transfer","conversation":"$C","to":["boris"]}"#),
        ),
        (
            "auth-array",
            s(r#"{"type":"hello","protocol":1,"auth":["visitor"]}"#),
        ),
        (
            "auth-unknown-kind",
            s(r#"{"type":"hello","protocol":1,"auth":{"kind":"robot"}}"#),
        ),
        (
            "auth-player-no-token",
            s(r#"{"type":"hello","protocol":1,"auth":{"kind":"player"}}"#),
        ),
        (
            "hello-protocol-big",
            s(r#"{"type":"hello","protocol":4294967296,"auth":{"kind":"visitor"}}"#),
        ),
        (
            "deep-nesting",
            format!(
                r#"{{"type":"ping","x":{}1{}}}"#,
                "[".repeat(200),
                "]".repeat(200)
            )
            .into_bytes(),
        ),
        ("number-huge", s(r#"{"type":"ping","x":1e400}"#)),
    ];
    let head = format!(r#"{{"type":"send","conversation":"{C}","client_id":"c","text":""#);
    let fill = |len: usize| {
        let mut t = head.clone().into_bytes();
        t.extend(std::iter::repeat_n(b'x', len - head.len() - 2));
        t.extend(br#""}"#);
        t
    };
    out.push(("frame-at-limit", fill(MAX_FRAME_BYTES)));
    out.push(("frame-over-limit", fill(MAX_FRAME_BYTES + 1)));
    out
}

#[test]
#[ignore = "writes the seed files into the corpus"]
fn write_seed_corpus() {
    for example in doc_examples() {
        let name = format!("seed-doc-{}", example.line);
        std::fs::write(corpus_dir().join(name), &example.frame).expect("write seed");
    }
    for (name, data) in edge_cases() {
        std::fs::write(corpus_dir().join(format!("seed-edge-{name}")), data).expect("write seed");
    }
}

#[test]
fn edge_cases_keep_every_promise() {
    for (name, data) in edge_cases() {
        run(name, &data).unwrap();
    }
}

#[test]
fn regressions_found_by_fuzzing() {
    // Unknown keys in a transfer target are ignored like unknown fields anywhere.
    let text =
        format!(r#"{{"type":"transfer","conversation":"{C}","to":{{"agent":"boris","x":[1]}}}}"#);
    assert!(matches!(
        decode_client(&text),
        Ok(ClientFrame::Transfer { to: TransferTarget::Agent(AgentId(a)), .. }) if a == "boris"
    ));
    for to in [
        r#"{"agent":"a","department":"d"}"#,
        r#"{"team":"x"}"#,
        r#"["boris"]"#,
    ] {
        let text = format!(r#"{{"type":"transfer","conversation":"{C}","to":{to}}}"#);
        assert_eq!(
            decode_client(&text).unwrap_err().code,
            ErrorCode::BadFrame,
            "{to}"
        );
    }
    // A frame is one JSON object: arrays are bad frames, not frames or unknown types.
    for text in [
        r#"["ping"]"#,
        r#"["fly"]"#,
        r#"[""]"#,
        r#"{"type":"hello","protocol":1,"auth":["visitor"]}"#,
    ] {
        assert_eq!(
            decode_client(text).unwrap_err().code,
            ErrorCode::BadFrame,
            "{text}"
        );
    }
    // Repeated fields other than `type` do not hide an unknown type.
    assert_eq!(
        decode_client(r#"{"type":"fly","a":1,"a":2}"#)
            .unwrap_err()
            .code,
        ErrorCode::UnknownType
    );
}

// ------------------------------------------------------------ property tests

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "(?s).{0,24}",
        Just(String::new()),
        Just("\"\\/\u{0}\u{1f}\u{7f}\u{2028}\u{fffd}😀".to_owned()),
    ]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

fn conversation() -> impl Strategy<Value = ConversationId> {
    any::<u128>().prop_map(|n| ConversationId(Uuid::from_u128(n)))
}

fn agent_status() -> impl Strategy<Value = AgentStatus> {
    prop::sample::select(vec![
        AgentStatus::Online,
        AgentStatus::Away,
        AgentStatus::Offline,
    ])
}

fn transfer_target() -> impl Strategy<Value = TransferTarget> {
    prop_oneof![
        text().prop_map(|a| TransferTarget::Agent(AgentId(a))),
        text().prop_map(TransferTarget::Department),
    ]
}

fn auth() -> impl Strategy<Value = Auth> {
    prop_oneof![
        (opt_text(), opt_text(), opt_text()).prop_map(|(token, name, language)| Auth::Visitor {
            token,
            name,
            language
        }),
        text().prop_map(|token| Auth::Player { token }),
        text().prop_map(|token| Auth::Agent { token }),
    ]
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    use ClientFrame as F;
    prop_oneof![
        (any::<u32>(), auth()).prop_map(|(protocol, auth)| F::Hello { protocol, auth }),
        (opt_text(), opt_text()).prop_map(|(department, language)| F::Start {
            department,
            language
        }),
        (conversation(), text(), text()).prop_map(|(conversation, client_id, text)| F::Send {
            conversation,
            client_id,
            text
        }),
        (conversation(), text(), text()).prop_map(|(conversation, client_id, text)| F::Note {
            conversation,
            client_id,
            text
        }),
        (conversation(), any::<bool>()).prop_map(|(conversation, active)| F::Typing {
            conversation,
            active
        }),
        (conversation(), any::<u64>())
            .prop_map(|(conversation, seq)| F::Read { conversation, seq }),
        (conversation(), any::<u64>()).prop_map(|(conversation, after)| F::Resume {
            conversation,
            after
        }),
        (conversation(), opt_text()).prop_map(|(conversation, reason)| F::Close {
            conversation,
            reason
        }),
        (conversation(), any::<u8>(), opt_text()).prop_map(|(conversation, score, comment)| {
            F::Rate {
                conversation,
                score,
                comment,
            }
        }),
        Just(F::History),
        Just(F::SignOut),
        agent_status().prop_map(|status| F::SetStatus { status }),
        conversation().prop_map(|conversation| F::Accept { conversation }),
        conversation().prop_map(|conversation| F::Decline { conversation }),
        (conversation(), transfer_target(), opt_text()).prop_map(|(conversation, to, note)| {
            F::Transfer {
                conversation,
                to,
                note,
            }
        }),
        conversation().prop_map(|conversation| F::Take { conversation }),
        Just(F::Ping),
    ]
}

fn role() -> impl Strategy<Value = Role> {
    prop::sample::select(vec![
        Role::Player,
        Role::Agent,
        Role::Supervisor,
        Role::System,
    ])
}

fn participant() -> impl Strategy<Value = Participant> {
    (role(), text(), opt_text()).prop_map(|(role, id, name)| Participant { role, id, name })
}

fn player_card() -> impl Strategy<Value = PlayerCard> {
    (
        text(),
        opt_text(),
        opt_text(),
        any::<u8>(),
        opt_text(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(id, name, language, vip_tier, jurisdiction, self_excluded, verified)| PlayerCard {
                id: PlayerId(id),
                name,
                language,
                vip_tier,
                jurisdiction,
                self_excluded,
                verified,
            },
        )
}

fn summary() -> impl Strategy<Value = ConversationSummary> {
    (
        conversation(),
        prop::sample::select(vec![
            ConversationState::Queued,
            ConversationState::Active,
            ConversationState::Offline,
            ConversationState::Closed,
        ]),
        (text(), text(), text()),
        opt_text(),
        (any::<u64>(), any::<u64>(), any::<u64>()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u8>()),
    )
        .prop_map(
            |(
                id,
                state,
                (department, language, player),
                agent,
                (last_seq, last_public_seq, created_at),
                closed_at,
                rating,
            )| {
                ConversationSummary {
                    id,
                    state,
                    department,
                    language,
                    player: PlayerId(player),
                    agent: agent.map(AgentId),
                    last_seq,
                    last_public_seq,
                    created_at,
                    closed_at,
                    rating,
                }
            },
        )
}

fn message() -> impl Strategy<Value = Message> {
    (
        conversation(),
        (any::<u64>(), any::<u64>()),
        prop::sample::select(vec![
            MessageKind::Text,
            MessageKind::Note,
            MessageKind::Event,
        ]),
        participant(),
        text(),
        (opt_text(), opt_text()),
        any::<u64>(),
    )
        .prop_map(
            |(conversation, (seq, prev), kind, sender, text, (client_id, event), at)| Message {
                conversation,
                seq,
                prev,
                kind,
                sender,
                text,
                client_id,
                event,
                at,
            },
        )
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    use ErrorCode as E;
    prop::sample::select(vec![
        E::BadFrame,
        E::UnknownType,
        E::HelloRequired,
        E::UnsupportedVersion,
        E::Unauthorized,
        E::TokenExpired,
        E::Forbidden,
        E::NotFound,
        E::InvalidState,
        E::TextTooLong,
        E::InvalidField,
        E::Conflict,
        E::RateLimited,
        E::Overloaded,
        E::TooManyConversations,
        E::Internal,
    ])
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    use ServerFrame as S;
    let limits = (
        any::<usize>(),
        any::<usize>(),
        any::<usize>(),
        any::<u32>(),
        any::<u32>(),
        proptest::option::of((any::<u32>(), any::<u32>())),
    )
        .prop_map(
            |(
                max_frame_bytes,
                max_text_chars,
                resume_page,
                frames_per_second,
                burst_frames,
                player,
            )| {
                WireLimits {
                    max_frame_bytes,
                    max_text_chars,
                    resume_page,
                    frames_per_second,
                    burst_frames,
                    player_messages_per_minute: player.map(|p| p.0),
                    player_message_burst: player.map(|p| p.1),
                }
            },
        );
    let offer = (
        conversation(),
        player_card(),
        (text(), text()),
        (any::<u64>(), any::<u64>()),
        proptest::option::of((participant(), opt_text())),
    )
        .prop_map(
            |(
                conversation,
                player,
                (department, language),
                (waited_ms, expires_in_ms),
                transfer,
            )| {
                S::Offer(Offer {
                    conversation,
                    player,
                    department,
                    language,
                    waited_ms,
                    expires_in_ms,
                    transfer: transfer.map(|(from, note)| TransferInfo { from, note }),
                })
            },
        );
    let queue_entry = (
        conversation(),
        text(),
        text(),
        any::<u8>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(conversation, department, language, vip_tier, waited_ms, offered)| QueueEntry {
                conversation,
                department,
                language,
                vip_tier,
                waited_ms,
                offered,
            },
        );
    prop_oneof![
        (
            any::<u32>(),
            participant(),
            opt_text(),
            proptest::option::of(agent_status()),
            prop::collection::vec(summary(), 0..3),
            limits
        )
            .prop_map(
                |(protocol, you, visitor_token, status, conversations, limits)| S::Welcome {
                    protocol,
                    you,
                    visitor_token,
                    status,
                    conversations,
                    limits,
                }
            ),
        (
            conversation(),
            text(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(|(conversation, client_id, seq, prev, duplicate)| S::Ack {
                conversation,
                client_id,
                seq,
                prev,
                duplicate,
            }),
        message().prop_map(S::Message),
        (conversation(), participant(), any::<bool>()).prop_map(|(conversation, from, active)| {
            S::Typing {
                conversation,
                from,
                active,
            }
        }),
        (conversation(), participant(), any::<u64>()).prop_map(|(conversation, by, seq)| S::Read {
            conversation,
            by,
            seq
        }),
        (
            conversation(),
            any::<u32>(),
            proptest::option::of(any::<u64>()),
            any::<bool>()
        )
            .prop_map(
                |(conversation, position, estimated_wait_secs, agents_online)| S::Queued {
                    conversation,
                    position,
                    estimated_wait_secs,
                    agents_online,
                }
            ),
        conversation().prop_map(|conversation| S::NoAgents { conversation }),
        offer,
        (
            conversation(),
            prop::sample::select(vec![
                WithdrawReason::Expired,
                WithdrawReason::Declined,
                WithdrawReason::Cancelled
            ])
        )
            .prop_map(|(conversation, reason)| S::OfferWithdrawn {
                conversation,
                reason
            }),
        (
            conversation(),
            participant(),
            proptest::option::of(player_card())
        )
            .prop_map(|(conversation, agent, player)| S::Assigned {
                conversation,
                agent,
                player
            }),
        (
            conversation(),
            transfer_target(),
            prop::sample::select(vec![
                TransferOutcome::Pending,
                TransferOutcome::Accepted,
                TransferOutcome::Declined,
                TransferOutcome::Expired
            ])
        )
            .prop_map(|(conversation, to, outcome)| S::TransferUpdate {
                conversation,
                to,
                outcome
            }),
        (conversation(), proptest::option::of(participant()))
            .prop_map(|(conversation, to)| S::Released { conversation, to }),
        (conversation(), opt_text(), role()).prop_map(|(conversation, reason, by)| S::Closed {
            conversation,
            reason,
            by
        }),
        (conversation(), any::<u8>()).prop_map(|(conversation, score)| S::Rated {
            conversation,
            score
        }),
        (conversation(), any::<u64>()).prop_map(|(conversation, last_seq)| S::Resumed {
            conversation,
            last_seq
        }),
        (
            conversation(),
            prop::sample::select(vec![CannotResumeReason::Ahead, CannotResumeReason::Purged]),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(
                |(conversation, reason, first_seq, last_seq)| S::CannotResume {
                    conversation,
                    reason,
                    first_seq,
                    last_seq,
                }
            ),
        prop::collection::vec(summary(), 0..3)
            .prop_map(|conversations| S::History { conversations }),
        (any::<usize>(), prop::collection::vec(queue_entry, 0..3))
            .prop_map(|(total, entries)| S::QueueSnapshot { total, entries }),
        agent_status().prop_map(|status| S::Status { status }),
        (
            error_code(),
            text(),
            opt_text(),
            proptest::option::of(conversation()),
            opt_text()
        )
            .prop_map(|(code, message, frame, conversation, client_id)| S::Error {
                code,
                message,
                frame,
                conversation,
                client_id,
            }),
        Just(S::Pong),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Whatever a client encodes with this crate, the server decodes to the
    /// same frame, and the fuzz target's promises hold for it.
    #[test]
    fn every_client_frame_survives_a_round_trip(frame in client_frame()) {
        let encoded = serde_json::to_string(&frame).unwrap();
        prop_assert_eq!(decode_client(&encoded), Ok(frame.clone()));
        match target(encoded.as_bytes()) {
            Ok(Verdict::Frame(decoded)) if encoded.len() <= MAX_FRAME_BYTES => {
                prop_assert_eq!(decoded, frame)
            }
            Ok(Verdict::TooBig) => prop_assert!(encoded.len() > MAX_FRAME_BYTES),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// Whatever the server encodes, a client decoding with this crate (the load
    /// generator does) reads back the same frame.
    #[test]
    fn every_server_frame_survives_a_round_trip(frame in server_frame()) {
        let encoded = encode_server(&frame);
        let decoded: ServerFrame = serde_json::from_str(&encoded)
            .map_err(|e| TestCaseError::fail(format!("{e}: {encoded}")))?;
        prop_assert_eq!(decoded, frame);
    }
}
