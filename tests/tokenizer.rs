//! GPT-2 BPE tokenizer: known ids, parity with the Python GPT-2 tokenizer, round trips.

mod common;

use common::Reference;
use gpt2::Tokenizer;

#[test]
fn known_sentence_encodes_to_published_ids() {
    let tok = Tokenizer::gpt2().unwrap();
    let ids = tok.encode("The quick brown fox jumps over the lazy dog");
    assert_eq!(ids, vec![464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290]);
    let strings = tok.token_strings(&ids).unwrap();
    assert_eq!(strings[..3], ["The", "Ġquick", "Ġbrown"]);
    assert_eq!(tok.eot(), 50256);
    assert_eq!(tok.encode_with_special("a<|endoftext|>b"), vec![64, 50256, 65]);
    assert_ne!(tok.encode("a<|endoftext|>b"), vec![64, 50256, 65]);
}

#[test]
fn matches_python_gpt2_tokenizer_on_reference_texts() {
    let tok = Tokenizer::gpt2().unwrap();
    let r = Reference::load("tiny-bpe");
    let texts = r.json["tokenizer.texts"].as_array().unwrap();
    let ids = r.json["tokenizer.ids"].as_array().unwrap();
    assert!(texts.len() >= 8);
    for (t, want) in texts.iter().zip(ids) {
        let t = t.as_str().unwrap();
        let want: Vec<u32> = want.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.encode(t), want, "text {t:?}");
        assert_eq!(tok.decode(&want).unwrap(), t);
    }
}

#[test]
fn round_trips_arbitrary_unicode() {
    let tok = Tokenizer::gpt2().unwrap();
    let samples = [
        "",
        " ",
        "   leading and trailing   ",
        "tabs\tand\nnewlines\r\n\n",
        "Ünïcödé — «quotes» and ‘smart’ ones",
        "日本語のテキスト、中文文本, 한국어",
        "emoji 😀👍🏽🇫🇷 and ZWJ 👩‍👩‍👧",
        "numbers 1234567890 3.14159 -42",
        "contractions: I'm, you're, it's, we'll, they'd, can't",
        "\u{0}\u{1}\u{7f} control",
        "Ελληνικά και Русский текст",
    ];
    for s in samples {
        let ids = tok.encode(s);
        assert_eq!(tok.decode(&ids).unwrap(), s, "{s:?}");
    }
    // pseudo-random code points
    let mut rng = gpt2::Rng::new(7);
    for _ in 0..200 {
        let s: String = (0..rng.below(40)).filter_map(|_| char::from_u32(rng.below(0x2FFFF) as u32)).collect();
        let ids = tok.encode(&s);
        assert_eq!(tok.decode(&ids).unwrap(), s);
    }
}
