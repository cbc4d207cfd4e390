//! Long inputs (issue 17): runs of a million whitespace characters, CRLF, mixed scripts and 10 MB
//! single "words" encode to the Python GPT-2 tokenizer's ids (fixtures/ref_tokenizer_long.py),
//! with no panic; chunked encoding at `safe_cut` gives the same ids; and the encoder still equals
//! tiktoken-rs wherever tiktoken-rs itself works.

mod common;

use gpt2::tokenizer::safe_cut;
use gpt2::Tokenizer;

fn fnv(ids: &[u32]) -> u64 {
    ids.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &i| (h ^ i as u64).wrapping_mul(0x100_0000_01b3))
}

fn recipe_text(recipe: &serde_json::Value) -> String {
    let mut text = String::new();
    for seg in recipe.as_array().unwrap() {
        let s = seg[0].as_str().unwrap();
        text.push_str(&s.repeat(seg[1].as_u64().unwrap() as usize));
    }
    text
}

fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn long_inputs_match_python_ids() {
    let tok = Tokenizer::gpt2().unwrap();
    let path = common::fixture("reference/tokenizer.long.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    // two threads: the 10 MB cases take seconds each
    let (even, odd): (Vec<_>, Vec<_>) = cases.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    std::thread::scope(|s| {
        let tok = &tok;
        let a = s.spawn(move || even.into_iter().for_each(|(_, c)| check_case(tok, c)));
        odd.into_iter().for_each(|(_, c)| check_case(tok, c));
        a.join().unwrap();
    });
}

fn check_case(tok: &Tokenizer, case: &serde_json::Value) {
    {
        let name = case["name"].as_str().unwrap();
        let text = recipe_text(&case["recipe"]);
        assert_eq!(text.len() as u64, case["bytes"].as_u64().unwrap(), "{name}: recipe");
        let ids = tok.encode(&text);
        let (head, tail) = (u32s(&case["head"]), u32s(&case["tail"]));
        assert_eq!(ids.len() as u64, case["n_ids"].as_u64().unwrap(), "{name}: number of ids");
        assert_eq!(ids[..head.len()], head[..], "{name}: first ids");
        assert_eq!(ids[ids.len() - tail.len()..], tail[..], "{name}: last ids");
        assert_eq!(format!("{:016x}", fnv(&ids)), case["fnv1a64"].as_str().unwrap(), "{name}: hash");
    }
}

#[test]
fn chunked_encoding_at_safe_cuts_equals_whole_text() {
    let tok = Tokenizer::gpt2().unwrap();
    let corpus = std::fs::read_to_string(common::fixture("corpus/shakespeare_val.txt")).unwrap();
    let crlf = corpus[..200_000].replace('\n', "\r\n");
    let texts = [
        corpus[..300_000].to_string(),
        crlf,
        format!("a{}b c\u{3000}\u{3000}d{}e 'll", "\n".repeat(5000), " ".repeat(3000)),
        "x\t\ty \u{85}z\u{a0} w".repeat(2000),
    ];
    for text in &texts {
        let whole = tok.encode(text);
        for block in [1, 7, 64, 1000, 4096] {
            // cut the text as a streaming reader would: the last safe cut of each growing block
            let mut ids = Vec::new();
            let mut start = 0;
            let mut end = 0;
            while end < text.len() {
                end = (end + block).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                if let Some(cut) = safe_cut(&text[start..end], usize::MAX) {
                    tok.encode_into(&text[start..start + cut], &mut ids);
                    start += cut;
                }
            }
            tok.encode_into(&text[start..], &mut ids);
            assert_eq!(ids, whole, "block {block}");
        }
    }
}

#[test]
fn equals_tiktoken_where_tiktoken_works() {
    let tok = Tokenizer::gpt2().unwrap();
    let tt = tiktoken_rs::r50k_base().unwrap();
    let corpus = std::fs::read_to_string(common::fixture("corpus/shakespeare_train.txt")).unwrap();
    assert_eq!(tok.encode(&corpus), tt.encode_ordinary(&corpus));
    let alphabet: Vec<char> =
        " \t\n\r\u{b}\u{85}\u{a0}\u{3000}\u{2028}aZ'sltdmvr1٣½.!-é漢🚀\u{301}<|>endoftx".chars().collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..20_000 {
        let len = i % 60;
        let text: String = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                alphabet[(state % alphabet.len() as u64) as usize]
            })
            .collect();
        assert_eq!(tok.encode(&text), tt.encode_ordinary(&text), "{text:?}");
        let special = format!("{text}<|endoftext|>{text}");
        assert_eq!(tok.encode_with_special(&special), tt.encode_with_special_tokens(&special), "{special:?}");
    }
    // long runs below tiktoken-rs's overflow threshold, each whitespace class
    for w in [" ", "\n", "\t", "\r\n", "\u{3000}", "\u{a0}"] {
        let text = format!("a{}b{}", w.repeat(20_000), w.repeat(20_000));
        assert_eq!(tok.encode(&text), tt.encode_ordinary(&text), "{w:?}");
    }
}
