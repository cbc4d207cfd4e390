//! Inspection and teaching API (issue 8): BPE trace vs tiktoken-rs, word/char tokenizers,
//! attention functions vs PyTorch, the causal module vs the model, attention maps vs
//! transformers' `output_attentions` / `output_hidden_states`, and the HTML/SVG/PNG renderers.
//! References: fixtures/ref_inspect.py → reference/{tiny,tiny-bpe}.inspect.*. Tolerance 1e-5
//! (docs/numerics.md).

mod common;

use common::{assert_close, fixture, Reference};
use gpt2::inspect::attention::{causal_mask, cross_attention, scaled_dot_product_attention, self_attention};
use gpt2::inspect::mha::{AttentionConfig, CausalSelfAttention, QkvProjection};
use gpt2::inspect::render::{colormap, heatmap_pixels, heatmap_png, heatmap_svg};
use gpt2::inspect::{attention_maps, attention_maps_batch, hidden_states, inspect, AttentionView};
use gpt2::kernels::layernorm::layernorm_forward;
use gpt2::tokenizer::simple::{CharTokenizer, Tokenize, WordTokenizer};
use gpt2::tokenizer::trace::BpeTracer;
use gpt2::{Error, ForwardInput, Gpt2, Rng, Tokenizer};
use ndarray::{s, Array1, Array2, Array3, ArrayD, Ix1, Ix2, Ix3};

const TOL: f32 = 1e-5;

fn f2(r: &Reference, k: &str) -> Array2<f32> {
    r.f32(k).into_dimensionality::<Ix2>().unwrap()
}
fn f1(r: &Reference, k: &str) -> Array1<f32> {
    r.f32(k).into_dimensionality::<Ix1>().unwrap()
}
fn close<D: ndarray::Dimension>(what: &str, got: &ndarray::Array<f32, D>, want: &ArrayD<f32>, tol: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let g: Vec<f32> = got.iter().copied().collect();
    let w: Vec<f32> = want.iter().copied().collect();
    assert_close(what, &g, &w, tol);
}

// ------------------------------------------------------------------------------------------
// BPE trace
// ------------------------------------------------------------------------------------------

fn tracer() -> (Tokenizer, BpeTracer) {
    let tok = Tokenizer::gpt2().unwrap();
    let tracer = BpeTracer::new(&tok).unwrap();
    (tok, tracer)
}

#[test]
fn bpe_trace_gives_the_issue_examples() {
    let (tok, tracer) = tracer();
    let t = tracer.trace("Your drawing is charmingly anachronistic.").unwrap();
    assert_eq!(t.token_strings(), ["Your", "Ġdrawing", "Ġis", "Ġcharming", "ly", "Ġan", "ach", "ron", "istic", "."]);
    assert_eq!(t.tokens(), tok.encode(&t.text));

    let t = tracer.trace("I like to cirkumnavigate the globe every year").unwrap();
    let piece = t.pieces.iter().find(|p| p.text == " cirkumnavigate").expect("piece");
    assert_eq!(piece.token_strings, ["Ġcir", "k", "umn", "av", "igate"]);
    assert_eq!(piece.symbols.len(), " cirkumnavigate".len());
    assert_eq!(piece.merges.len(), piece.symbols.len() - 5);
    // the first merge is the lowest-rank pair present: "a"+"t" (rank 265)
    let m = &piece.merges[0];
    assert_eq!((m.left.as_str(), m.right.as_str(), m.merged.as_str(), m.rank), ("a", "t", "at", 265));
    assert_eq!(t.tokens(), tok.encode(&t.text));
    let listing = t.to_string();
    assert!(listing.contains("merge Ġc + ir -> Ġcir (rank 10774)"), "{listing}");
}

/// Varied strings: every character class the split regex distinguishes, plus random mixes.
fn corpus() -> Vec<String> {
    let mut texts: Vec<String> = [
        "",
        " ",
        "   ",
        "\n",
        "Hello world",
        " Hello  world ",
        "Tabs\tand\t\tspaces   then\n\n\nnewlines\r\n",
        "I'm, you're, he's, we've, they'll, I'd, don't — DON'T 'S 'll",
        "rock'n'roll o'clock y'all '''",
        "1234567890 3.14159 -42 1e10 ١٢٣ ½ ², 2024-05-17",
        "emoji 😀😃🙂 family 👨‍👩‍👧 flags 🇩🇪",
        "日本語のテキスト、中文文本，한국어 텍스트",
        "café naïve résumé — über straße Ελληνικά русский",
        "e\u{301} combining, zero\u{200B}width, nbsp\u{A0}here",
        "<|endoftext|> is plain text here",
        "    indented code():\n        return x ** 2  # comment",
        "!!!???...,,,;;;:::---___***&&&",
        "Mixed123Numbers456and789Letters",
        "trailing whitespace   ",
        "Ġ is a character too, and Ċ",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let pool: Vec<char> =
        "aAbBcxyz ZÜéß日本😀 \t\n\r0123456789'sltvedmr.,!?-_\"()[]{}<>/\\@#$%^&*+=~`|ёж\u{301}\u{A0}".chars().collect();
    let mut rng = Rng::new(8);
    for _ in 0..1500 {
        let len = 1 + rng.below(40) as usize;
        texts.push((0..len).map(|_| pool[rng.below(pool.len() as u64) as usize]).collect());
    }
    let long = "a".repeat(300) + &" ".repeat(150) + &"9".repeat(120); // > 100 byte pieces
    texts.push(long);
    texts
}

#[test]
fn bpe_trace_agrees_with_tiktoken_token_for_token() {
    let (tok, tracer) = tracer();
    let texts = corpus();
    for text in &texts {
        let t = tracer.trace(text).unwrap();
        assert_eq!(t.tokens(), tok.encode(text), "tokens of {text:?}");
        let joined: String = t.pieces.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(&joined, text, "pieces of {text:?}");
        assert_eq!(tok.decode(&t.tokens()).unwrap(), *text, "round trip of {text:?}");
        for p in &t.pieces {
            assert_eq!(p.symbols_after(p.merges.len()), p.token_strings, "{text:?}");
            assert_eq!(tok.token_strings(&p.tokens).unwrap(), p.token_strings);
            // BPE merges come out in non-decreasing rank order within a piece
            assert!(p.merges.windows(2).all(|w| w[0].rank <= w[1].rank), "ranks of {:?}", p.text);
            for m in &p.merges {
                assert_eq!(format!("{}{}", m.left, m.right), m.merged);
            }
        }
    }
    eprintln!("{} texts agree with tiktoken-rs", texts.len());
}

#[test]
fn bpe_trace_matches_transformers_ids() {
    let (_, tracer) = tracer();
    let r = Reference::load("tiny-bpe");
    let texts = r.json["tokenizer.texts"].as_array().unwrap();
    let ids = r.json["tokenizer.ids"].as_array().unwrap();
    for (text, want) in texts.iter().zip(ids) {
        let want: Vec<u32> = want.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tracer.trace(text.as_str().unwrap()).unwrap().tokens(), want);
    }
}

#[test]
fn pretokenize_splits_like_gpt2() {
    let (_, tracer) = tracer();
    assert_eq!(
        tracer.pretokenize("I'm here  now, 2024!\n").unwrap(),
        ["I", "'m", " here", " ", " now", ",", " 2024", "!", "\n"]
    );
    assert!(tracer.pretokenize("").unwrap().is_empty());
    assert_eq!(tracer.rank(b" the"), Some(262));
    assert_eq!(tracer.rank(b"<|endoftext|>"), None);
}

// ------------------------------------------------------------------------------------------
// Word and character tokenizers
// ------------------------------------------------------------------------------------------

#[test]
fn word_tokenizer_vocab_unknowns_and_round_trip() {
    let corpus = ["the cat sat on the mat", "the dog sat\ton\nthe log"];
    let t = WordTokenizer::from_corpus(corpus, 1).unwrap();
    assert_eq!(t.words(), ["<|unk|>", "cat", "dog", "log", "mat", "on", "sat", "the"]);
    assert_eq!(t.vocab_size(), 8);
    assert_eq!(t.encode("the  cat\non the mat"), [7, 1, 5, 7, 4]);
    assert_eq!(t.decode(&t.encode("the  cat\non the mat")).unwrap(), "the cat on the mat");
    assert_eq!(t.encode("the bird"), [7, WordTokenizer::UNK_ID]);
    assert_eq!(t.decode(&[7, 0]).unwrap(), "the <|unk|>");
    assert_eq!((t.id("dog"), t.id("bird"), t.word(2), t.word(99)), (Some(2), None, Some("dog"), None));
    // min_count drops rare words
    let t2 = WordTokenizer::from_corpus(corpus, 2).unwrap();
    assert_eq!(t2.words(), ["<|unk|>", "on", "sat", "the"]);
    // the same vocabulary whatever the corpus order
    assert_eq!(WordTokenizer::from_corpus([corpus[1], corpus[0]], 1).unwrap(), t);
    // Unicode words
    let u = WordTokenizer::from_corpus(["naïve café 日本語"], 1).unwrap();
    assert_eq!(u.decode(&u.encode("café 日本語")).unwrap(), "café 日本語");
}

#[test]
fn char_tokenizer_vocab_unknowns_and_round_trip() {
    let t = CharTokenizer::from_corpus(["hello wörld 😀\n"]).unwrap();
    assert_eq!(t.chars()[0], CharTokenizer::UNK);
    assert_eq!(t.vocab_size(), 1 + 11); // h e l o space w ö r d 😀 \n
    let text = "hello\n😀 wörld";
    assert_eq!(t.decode(&t.encode(text)).unwrap(), text);
    let ids = t.encode("hex");
    assert_eq!(ids[2], CharTokenizer::UNK_ID);
    assert_eq!(t.decode(&ids).unwrap(), "he\u{FFFD}");
    assert_eq!(t.id('h'), Some(t.encode("h")[0]));
    assert_eq!(t.char(t.id('ö').unwrap()), Some('ö'));
}

#[test]
fn simple_tokenizers_reject_bad_input() {
    assert!(matches!(WordTokenizer::from_corpus([" \n\t "], 1), Err(Error::EmptyInput(_))));
    assert!(matches!(WordTokenizer::from_corpus(["a"], 0), Err(Error::InvalidArgument { name: "min_count", .. })));
    assert!(matches!(WordTokenizer::from_corpus(["a b"], 5), Err(Error::InvalidArgument { name: "min_count", .. })));
    for bad in [vec!["a".to_string(), "a".into()], vec!["a b".into()], vec!["".into()], vec!["<|unk|>".into()]] {
        assert!(matches!(WordTokenizer::from_words(bad), Err(Error::InvalidArgument { name: "words", .. })));
    }
    assert!(matches!(CharTokenizer::from_corpus([""]), Err(Error::EmptyInput(_))));
    let w = WordTokenizer::from_corpus(["a b"], 1).unwrap();
    assert!(matches!(w.decode(&[1, 3]), Err(Error::TokenOutOfVocab { token: 3, position: 1, vocab_size: 3 })));
    let c = CharTokenizer::from_corpus(["ab"]).unwrap();
    assert!(matches!(c.decode(&[9]), Err(Error::TokenOutOfVocab { token: 9, position: 0, .. })));
    // the BPE tokenizer through the same trait
    let bpe: &dyn Tokenize = &Tokenizer::gpt2().unwrap();
    assert_eq!(bpe.decode(&bpe.encode("Hello world")).unwrap(), "Hello world");
    assert!(matches!(bpe.decode(&[50257]), Err(Error::TokenOutOfVocab { .. })));
}

// ------------------------------------------------------------------------------------------
// Attention functions vs PyTorch
// ------------------------------------------------------------------------------------------

#[test]
fn sdpa_matches_pytorch() {
    let r = Reference::load("tiny.inspect");
    let (q, k, v) = (f2(&r, "sdpa.q"), f2(&r, "sdpa.k"), f2(&r, "sdpa.v"));
    let a = scaled_dot_product_attention(q.view(), k.view(), v.view(), None).unwrap();
    close("sdpa no mask: out", &a.output, &r.f32("sdpa.nomask.out"), TOL);
    close("sdpa no mask: weights", &a.weights, &r.f32("sdpa.nomask.weights"), TOL);

    let mask = r.i32("sdpa.mask").into_dimensionality::<Ix2>().unwrap().mapv(|x| x != 0);
    let a = scaled_dot_product_attention(q.view(), k.view(), v.view(), Some(mask.view())).unwrap();
    close("sdpa bool mask: out", &a.output, &r.f32("sdpa.masked.out"), TOL);
    close("sdpa bool mask: weights", &a.weights, &r.f32("sdpa.masked.weights"), TOL);
    assert!(a.weights.iter().zip(&mask).all(|(&w, &m)| m || w == 0.0));

    let (q, k, v) = (f2(&r, "sdpa.causal.q"), f2(&r, "sdpa.causal.k"), f2(&r, "sdpa.causal.v"));
    let m = causal_mask(q.nrows());
    let a = scaled_dot_product_attention(q.view(), k.view(), v.view(), Some(m.view())).unwrap();
    close("sdpa causal: out", &a.output, &r.f32("sdpa.causal.out"), TOL);
    close("sdpa causal: weights", &a.weights, &r.f32("sdpa.causal.weights"), TOL);
    check_causal_rows(&a.weights);
}

/// Rows sum to 1 and nothing is above the diagonal.
fn check_causal_rows(w: &Array2<f32>) {
    let t = w.nrows();
    for i in 0..t {
        let sum: f32 = w.row(i).sum();
        assert!((sum - 1.0).abs() < 1e-5, "row {i} sums to {sum}");
        assert!(w.row(i).iter().skip(i + 1).all(|&x| x == 0.0), "row {i} attends to the future");
    }
}

#[test]
fn cross_attention_matches_pytorch() {
    let r = Reference::load("tiny.inspect");
    let g = |k: &str| f2(&r, &format!("cross.{k}"));
    let a = cross_attention(g("s1").view(), g("s2").view(), g("w_q").view(), g("w_k").view(), g("w_v").view()).unwrap();
    close("cross attention: out", &a.output, &r.f32("cross.out"), TOL);
    close("cross attention: weights", &a.weights, &r.f32("cross.weights"), TOL);
    assert_eq!(a.weights.dim(), (g("s2").nrows(), g("s1").nrows()));
}

#[test]
fn self_attention_is_cross_attention_of_a_sequence_with_itself() {
    let mut rng = Rng::new(3);
    let mut rand = |r: usize, c: usize| Array2::from_shape_simple_fn((r, c), || rng.normal());
    let (x, wq, wk, wv) = (rand(5, 4), rand(4, 3), rand(4, 3), rand(4, 6));
    let a = self_attention(x.view(), wq.view(), wk.view(), wv.view(), false).unwrap();
    let b = cross_attention(x.view(), x.view(), wq.view(), wk.view(), wv.view()).unwrap();
    assert_eq!(a, b);
    let c = self_attention(x.view(), wq.view(), wk.view(), wv.view(), true).unwrap();
    check_causal_rows(&c.weights);
    // the last query sees every key, so causal and full agree on the last row
    assert_eq!(c.output.row(4), a.output.row(4));
}

#[test]
fn attention_functions_reject_bad_shapes() {
    let z = |r: usize, c: usize| Array2::<f32>::zeros((r, c));
    let (q, k, v) = (z(3, 4), z(5, 4), z(5, 2));
    let sdpa = |q: &Array2<f32>, k: &Array2<f32>, v: &Array2<f32>, m: Option<&Array2<bool>>| {
        scaled_dot_product_attention(q.view(), k.view(), v.view(), m.map(|m| m.view()))
    };
    assert!(matches!(sdpa(&z(3, 5), &k, &v, None), Err(Error::Shape(_))));
    assert!(matches!(sdpa(&q, &k, &z(4, 2), None), Err(Error::Shape(_))));
    assert!(matches!(sdpa(&z(0, 4), &z(0, 4), &z(0, 2), None), Err(Error::EmptyInput(_))));
    assert!(matches!(sdpa(&q, &k, &v, Some(&causal_mask(3))), Err(Error::Shape(_))));
    let mut hide = Array2::from_elem((3, 5), true);
    hide.row_mut(1).fill(false);
    assert!(matches!(sdpa(&q, &k, &v, Some(&hide)), Err(Error::InvalidArgument { name: "mask", .. })));
    assert!(sdpa(&q, &k, &v, None).is_ok());

    let (s1, s2) = (z(6, 5), z(4, 3));
    let (wq, wk, wv) = (z(3, 4), z(5, 4), z(5, 7));
    assert!(cross_attention(s1.view(), s2.view(), wq.view(), wk.view(), wv.view()).is_ok());
    assert!(matches!(cross_attention(s2.view(), s1.view(), wq.view(), wk.view(), wv.view()), Err(Error::Shape(_))));
    assert!(matches!(
        cross_attention(s1.view(), s2.view(), wq.view(), z(5, 3).view(), wv.view()),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        cross_attention(s1.view(), s2.view(), wq.view(), wk.view(), z(4, 7).view()),
        Err(Error::Shape(_))
    ));
    assert!(matches!(self_attention(s1.view(), wq.view(), wk.view(), wv.view(), true), Err(Error::Shape(_))));
}

// ------------------------------------------------------------------------------------------
// Multi-head causal self-attention module
// ------------------------------------------------------------------------------------------

fn reference_mha(r: &Reference) -> CausalSelfAttention {
    let c = &r.json["mha.config"];
    let cfg = AttentionConfig {
        n_embd: c["n_embd"].as_u64().unwrap() as usize,
        n_head: c["n_head"].as_u64().unwrap() as usize,
        block_size: c["block_size"].as_u64().unwrap() as usize,
    };
    let w = ["q", "k", "v"].map(|k| f2(r, &format!("mha.w_{k}")));
    let b = ["q", "k", "v"].map(|k| f1(r, &format!("mha.b_{k}")));
    CausalSelfAttention::from_separate(cfg, w, Some(b), f2(r, "mha.w_o"), Some(f1(r, "mha.b_o"))).unwrap()
}

#[test]
fn multi_head_module_matches_pytorch_separate_and_fused() {
    let r = Reference::load("tiny.inspect");
    let x = r.f32("mha.x").into_dimensionality::<Ix3>().unwrap();
    let separate = reference_mha(&r);
    let fused = separate.clone().into_fused();
    assert!(matches!(fused.qkv(), QkvProjection::Fused { .. }));
    for (name, m) in [("separate", &separate), ("fused", &fused)] {
        let out = m.forward(x.view()).unwrap();
        close(&format!("mha {name}: out"), &out.output, &r.f32("mha.out"), TOL);
        close(&format!("mha {name}: weights"), &out.weights, &r.f32("mha.weights"), TOL);
        for w in out.weights.outer_iter().flat_map(|b| b.outer_iter().map(|h| h.to_owned()).collect::<Vec<_>>()) {
            check_causal_rows(&w);
        }
    }
    assert_eq!(fused.clone().into_separate(), separate);
}

#[test]
fn multi_head_module_rejects_bad_input() {
    let cfg = AttentionConfig { n_embd: 8, n_head: 2, block_size: 4 };
    let m = CausalSelfAttention::new_random(cfg, 1).unwrap();
    assert!(matches!(
        m.forward(Array3::zeros((1, 5, 8)).view()),
        Err(Error::SequenceTooLong { len: 5, n_positions: 4 })
    ));
    assert!(matches!(m.forward(Array3::zeros((1, 3, 6)).view()), Err(Error::Shape(_))));
    assert!(matches!(m.forward(Array3::zeros((1, 0, 8)).view()), Err(Error::EmptyInput(_))));
    for bad in [
        AttentionConfig { n_embd: 8, n_head: 3, block_size: 4 },
        AttentionConfig { n_embd: 8, n_head: 0, block_size: 4 },
        AttentionConfig { n_embd: 8, n_head: 2, block_size: 0 },
    ] {
        assert!(matches!(CausalSelfAttention::new_random(bad, 0), Err(Error::InvalidArgument { .. })));
    }
    let e = CausalSelfAttention::from_fused(cfg, Array2::zeros((8, 8)), None, Array2::zeros((8, 8)), None);
    assert!(matches!(e, Err(Error::ShapeMismatch { .. })));
    let ws = [Array2::zeros((8, 8)), Array2::zeros((8, 8)), Array2::zeros((8, 8))];
    let e = CausalSelfAttention::from_separate(cfg, ws.clone(), None, Array2::zeros((8, 4)), None);
    assert!(matches!(e, Err(Error::ShapeMismatch { .. })));
    let bs = [Array1::zeros(8), Array1::zeros(8), Array1::zeros(7)];
    let e = CausalSelfAttention::from_separate(cfg, ws, Some(bs), Array2::zeros((8, 8)), None);
    assert!(matches!(e, Err(Error::ShapeMismatch { .. })));
    let model = Gpt2::load(fixture("models/tiny")).unwrap();
    assert!(matches!(CausalSelfAttention::from_model(&model, 2), Err(Error::InvalidArgument { name: "layer", .. })));
}

/// `ln_1` of block `l` computed from the block's input (the model's hidden state `l`).
fn ln_1(model: &Gpt2, l: usize, h: &Array3<f32>) -> Array3<f32> {
    let c = model.config().n_embd;
    let w = model.param(&format!("h.{l}.ln_1.weight")).unwrap();
    let b = model.param(&format!("h.{l}.ln_1.bias")).unwrap();
    let x = h.as_standard_layout();
    let mut out = vec![0f32; x.len()];
    layernorm_forward(
        &mut out,
        None,
        None,
        x.as_slice().unwrap(),
        w.as_slice().unwrap(),
        b.as_slice().unwrap(),
        c,
        model.config().layer_norm_epsilon,
    );
    Array3::from_shape_vec(h.dim(), out).unwrap()
}

#[test]
fn causal_module_equals_the_models_attention() {
    // tiny: against HF's own GPT2Attention of layer 0 (hooked output) and our forward
    let model = Gpt2::load(fixture("models/tiny")).unwrap();
    let r = Reference::load("tiny.inspect");
    let ids = r.u32("maps.input_ids").into_dimensionality::<Ix2>().unwrap();
    let ins = inspect(&model, &ForwardInput::new(ids.view())).unwrap();
    let x = ln_1(&model, 0, &ins.hidden_states[0]);
    close("ln_1 from the block input vs HF ln_1", &x, &r.f32("layer0.ln_1"), TOL);
    let attn = CausalSelfAttention::from_model(&model, 0).unwrap();
    let out = attn.forward(x.view()).unwrap();
    close("module(layer 0) vs HF attn output", &out.output, &r.f32("layer0.attn_out"), TOL);
    let want = ins.attentions[0].clone().into_dyn();
    close("module(layer 0) weights vs model attentions", &out.weights, &want, 1e-6);
    // separate projections give the same result
    let sep = attn.into_separate().forward(x.view()).unwrap();
    close("separate-projection module", &sep.output, &out.output.into_dyn(), 1e-6);

    // tiny-bpe: every layer, against the model's own attention probabilities
    let model = Gpt2::load(fixture("models/tiny-bpe")).unwrap();
    let rb = Reference::load("tiny-bpe.inspect");
    let ids = rb.u32("maps.input_ids").into_dimensionality::<Ix2>().unwrap();
    let ins = inspect(&model, &ForwardInput::new(ids.view())).unwrap();
    for l in 0..model.config().n_layer {
        let out =
            CausalSelfAttention::from_model(&model, l).unwrap().forward(ln_1(&model, l, &ins.hidden_states[l]).view());
        let want = ins.attentions[l].clone().into_dyn();
        close(&format!("tiny-bpe module(layer {l}) weights"), &out.unwrap().weights, &want, 1e-6);
    }
}

// ------------------------------------------------------------------------------------------
// Attention maps and hidden states vs transformers
// ------------------------------------------------------------------------------------------

fn check_maps_against_hf(model_name: &str) {
    let model = Gpt2::load(fixture(&format!("models/{model_name}"))).unwrap();
    let r = Reference::load(&format!("{model_name}.inspect"));
    let ids = r.u32("maps.input_ids").into_dimensionality::<Ix2>().unwrap();
    let ins = inspect(&model, &ForwardInput::new(ids.view())).unwrap();
    let n_layer = model.config().n_layer;
    assert_eq!(ins.attentions.len(), n_layer);
    assert_eq!(ins.hidden_states.len(), n_layer + 1);
    for (l, a) in ins.attentions.iter().enumerate() {
        close(&format!("{model_name} attentions[{l}]"), a, &r.f32(&format!("maps.attentions.{l}")), TOL);
        for b in a.outer_iter() {
            for h in b.outer_iter() {
                check_causal_rows(&h.to_owned());
            }
        }
    }
    for (l, h) in ins.hidden_states.iter().enumerate() {
        close(&format!("{model_name} hidden_states[{l}]"), h, &r.f32(&format!("maps.hidden_states.{l}")), TOL);
    }
    let head = ins.logits.slice(s![.., .., ..256]).to_owned();
    close(&format!("{model_name} logits[..256]"), &head, &r.f32("maps.logits_head"), 1e-4);
    // the convenience wrappers give the same arrays
    assert_eq!(attention_maps_batch(&model, ids.view()).unwrap(), ins.attentions);
    assert_eq!(hidden_states(&model, ids.view()).unwrap(), ins.hidden_states);
    let single = attention_maps(&model, ids.row(0).as_slice().unwrap()).unwrap();
    for (l, m) in single.iter().enumerate() {
        assert_eq!(m, &ins.attentions[l].slice(s![0, .., .., ..]));
    }
}

#[test]
fn attention_maps_and_hidden_states_match_transformers_tiny() {
    check_maps_against_hf("tiny");
}

#[test]
fn attention_maps_and_hidden_states_match_transformers_tiny_bpe() {
    check_maps_against_hf("tiny-bpe");
    let rb = Reference::load("tiny-bpe.inspect");
    let tok = Tokenizer::gpt2().unwrap();
    let text = rb.json["maps.text"].as_str().unwrap();
    let ids = rb.u32("maps.input_ids").into_dimensionality::<Ix2>().unwrap();
    assert_eq!(tok.encode(text), ids.row(0).to_vec());
}

#[test]
fn introspection_rejects_bad_tokens() {
    let model = Gpt2::load(fixture("models/tiny")).unwrap();
    assert!(matches!(attention_maps(&model, &[]), Err(Error::EmptyInput(_))));
    assert!(matches!(attention_maps(&model, &[1, 1000]), Err(Error::TokenOutOfVocab { token: 1000, .. })));
    assert!(matches!(attention_maps(&model, &[1; 65]), Err(Error::SequenceTooLong { len: 65, .. })));
}

// ------------------------------------------------------------------------------------------
// Rendering
// ------------------------------------------------------------------------------------------

fn bpe_view() -> AttentionView {
    let model = Gpt2::load(fixture("models/tiny-bpe")).unwrap();
    let tok = Tokenizer::gpt2().unwrap();
    AttentionView::from_text(&model, &tok, "The cat sat on the mat because it was warm.").unwrap()
}

/// The `<script id="gpt2-data">` JSON of a head-view page.
fn embedded_json(html: &str) -> serde_json::Value {
    let start = html.find("<script id=\"gpt2-data\" type=\"application/json\">").expect("data script");
    let rest = &html[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest.find("</script>").unwrap();
    serde_json::from_str(&rest[open..close]).expect("embedded JSON parses")
}

#[test]
fn html_head_view_is_self_contained_and_carries_the_maps() {
    let view = bpe_view();
    let html = view.to_html("tiny-bpe <script>alert(1)</script> & co");
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert!(html.contains("<title>tiny-bpe &lt;script&gt;alert(1)&lt;/script&gt; &amp; co</title>"));
    // no external resources: the only URL is the SVG namespace identifier
    for bad in ["src=", "href=", "url(", "@import", "<link", "<iframe", "fetch("] {
        assert!(!html.contains(bad), "{bad}");
    }
    assert_eq!(html.matches("http").count(), html.matches("http://www.w3.org/2000/svg").count());
    assert_eq!(html.matches("<script").count(), 2);
    let data = embedded_json(&html);
    let tokens: Vec<&str> = data["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(tokens, view.tokens());
    assert_eq!(tokens[1], "Ġcat");
    let att = data["attentions"].as_array().unwrap();
    assert_eq!(att.len(), view.n_layer());
    for (l, m) in view.maps().iter().enumerate() {
        for ((h, i, j), &w) in m.indexed_iter() {
            let got = att[l][h][i][j].as_f64().unwrap() as f32;
            assert!((got - w).abs() <= 5e-6, "[{l},{h},{i},{j}] {got} vs {w}");
        }
    }
    // a token that looks like a closing tag cannot end the data script early
    let map = Array3::from_shape_vec((1, 1, 1), vec![1.0]).unwrap();
    let tricky = AttentionView::new(vec!["</script><b>{{TITLE}}".into()], vec![map]).unwrap();
    let html = tricky.to_html("{{DATA}}");
    assert_eq!(embedded_json(&html)["tokens"][0], "</script><b>{{TITLE}}");
    assert!(html.contains("<title>{{DATA}}</title>"));
}

/// Parses PNG chunks (checking every CRC) and inflates the image with miniz_oxide.
fn decode_png(png: &[u8]) -> (u32, u32, u8, Vec<[u8; 3]>, Vec<u8>) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (mut pos, mut ihdr, mut plte, mut idat, mut seen) = (8, Vec::new(), Vec::new(), Vec::new(), Vec::new());
    while pos < png.len() {
        let len = u32::from_be_bytes(png[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &png[pos + 4..pos + 8];
        let data = &png[pos + 8..pos + 8 + len];
        let crc = u32::from_be_bytes(png[pos + 8 + len..pos + 12 + len].try_into().unwrap());
        assert_eq!(crc, gpt2::inspect::png::crc32(&png[pos + 4..pos + 8 + len]), "CRC of {kind:?}");
        seen.push(String::from_utf8(kind.to_vec()).unwrap());
        match kind {
            b"IHDR" => ihdr = data.to_vec(),
            b"PLTE" => plte = data.chunks(3).map(|c| [c[0], c[1], c[2]]).collect(),
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        pos += 12 + len;
    }
    assert_eq!(seen.first().map(String::as_str), Some("IHDR"));
    assert_eq!(seen.last().map(String::as_str), Some("IEND"));
    let w = u32::from_be_bytes(ihdr[0..4].try_into().unwrap());
    let h = u32::from_be_bytes(ihdr[4..8].try_into().unwrap());
    assert_eq!((ihdr[8], &ihdr[10..13]), (8, &[0u8, 0, 0][..]));
    let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&idat).expect("valid zlib stream");
    let bpp = if ihdr[9] == 2 { 3 } else { 1 };
    let row = w as usize * bpp + 1;
    assert_eq!(raw.len(), row * h as usize);
    let mut pixels = Vec::new();
    for r in raw.chunks(row) {
        assert_eq!(r[0], 0, "filter byte");
        pixels.extend_from_slice(&r[1..]);
    }
    (w, h, ihdr[9], plte, pixels)
}

#[test]
fn png_heatmap_decodes_to_the_weights() {
    let view = bpe_view();
    let (layer, head, cell) = (1, 2, 9);
    let map = view.map(layer, head).unwrap();
    let png = view.heatmap_png(layer, head, cell).unwrap();
    let (w, h, color_type, palette, pixels) = decode_png(&png);
    let t = view.tokens().len();
    assert_eq!((w as usize, h as usize, color_type), (t * (cell + 1) + 1, t * (cell + 1) + 1, 3));
    let raster = heatmap_pixels(map, cell).unwrap();
    assert_eq!((raster.width, raster.height), (w as usize, h as usize));
    assert_eq!((&raster.palette, &raster.pixels), (&palette, &pixels));
    for ((i, j), &v) in map.indexed_iter() {
        let (y, x) = (i * (cell + 1) + 1 + cell / 2, j * (cell + 1) + 1 + cell / 2);
        let rgb = palette[pixels[y * w as usize + x] as usize];
        let want = colormap(v);
        assert!(rgb.iter().zip(want).all(|(&a, b)| a.abs_diff(b) <= 2), "({i},{j}) {rgb:?} vs {want:?}");
        if j > i {
            assert_eq!(rgb, colormap(0.0), "masked cell ({i},{j})");
        }
    }
    assert_eq!(palette[pixels[0] as usize], [200, 200, 200], "grid");
    // flat regions compress: far smaller than the raw pixels
    assert!(png.len() < pixels.len() / 4, "{} bytes for {} pixels", png.len(), pixels.len());
    eprintln!("heatmap {w}x{h}: {} bytes", png.len());
}

#[test]
fn png_encoder_round_trips_arbitrary_images() {
    use gpt2::inspect::png::{encode_indexed, encode_rgb};
    let mut rng = Rng::new(5);
    for &(w, h) in &[(1usize, 1usize), (3, 2), (17, 9), (300, 7), (40, 40)] {
        // noise, runs and repeated rows mixed
        let mut px: Vec<u8> =
            (0..w * h * 3).map(|_| if rng.below(3) == 0 { rng.below(256) as u8 } else { 7 }).collect();
        if h > 2 {
            let (a, b) = px.split_at_mut(w * 3);
            b[..w * 3].copy_from_slice(a);
        }
        let (dw, dh, ct, _, back) = decode_png(&encode_rgb(w, h, &px).unwrap());
        assert_eq!((dw as usize, dh as usize, ct, &back), (w, h, 2, &px));
        let pal: Vec<[u8; 3]> = (0..=255u8).map(|i| [i, 255 - i, i / 2]).collect();
        let idx: Vec<u8> = (0..w * h).map(|_| rng.below(256) as u8).collect();
        let (_, _, ct, p, back) = decode_png(&encode_indexed(w, h, &pal, &idx).unwrap());
        assert_eq!((ct, &p, &back), (3, &pal, &idx));
    }
    assert!(matches!(encode_rgb(0, 1, &[]), Err(Error::InvalidArgument { .. })));
    assert!(matches!(encode_rgb(2, 2, &[0; 11]), Err(Error::Shape(_))));
    assert!(matches!(encode_indexed(1, 1, &[], &[0]), Err(Error::InvalidArgument { name: "palette", .. })));
    assert!(matches!(encode_indexed(1, 1, &[[0; 3]], &[1]), Err(Error::InvalidArgument { name: "pixels", .. })));
}

#[test]
fn svg_heatmap_is_labelled_and_escaped() {
    let view = bpe_view();
    let t = view.tokens().len();
    let svg = view.heatmap_svg(0, 1).unwrap();
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<rect").count(), t * t + 1);
    assert_eq!(svg.matches("<text").count(), 2 * t);
    assert!(svg.contains(">Ġcat</text>"));
    let labels = vec!["<a&b>".to_string(), "\"q\"".into()];
    let m = Array2::from_shape_vec((2, 2), vec![1.0, 0.0, 0.5, 0.5]).unwrap();
    let svg = heatmap_svg(m.view(), &labels, &labels).unwrap();
    assert!(svg.contains("&lt;a&amp;b&gt;") && svg.contains("&quot;q&quot;") && !svg.contains("<a&b>"));
}

#[test]
fn renderers_reject_bad_input() {
    let view = bpe_view();
    assert!(matches!(view.map(2, 0), Err(Error::InvalidArgument { name: "layer", .. })));
    assert!(matches!(view.map(0, 4), Err(Error::InvalidArgument { name: "head", .. })));
    assert!(matches!(view.heatmap_png(0, 0, 0), Err(Error::InvalidArgument { name: "cell", .. })));
    assert!(matches!(view.heatmap_png(0, 0, 5000), Err(Error::InvalidArgument { name: "cell", .. })));
    let m = |v: Vec<f32>| Array3::from_shape_vec((1, 2, 2), v).unwrap();
    let two = || vec!["a".to_string(), "b".into()];
    assert!(matches!(AttentionView::new(vec![], vec![m(vec![0.0; 4])]), Err(Error::EmptyInput(_))));
    assert!(matches!(AttentionView::new(two(), vec![]), Err(Error::EmptyInput(_))));
    assert!(matches!(AttentionView::new(vec!["a".into()], vec![m(vec![0.0; 4])]), Err(Error::Shape(_))));
    let other = Array3::zeros((2, 2, 2));
    assert!(matches!(AttentionView::new(two(), vec![m(vec![0.0; 4]), other]), Err(Error::Shape(_))));
    assert!(matches!(
        AttentionView::new(two(), vec![m(vec![f32::NAN, 0.0, 0.0, 1.0])]),
        Err(Error::InvalidArgument { .. })
    ));
    let nan = Array2::from_elem((2, 2), f32::NAN);
    assert!(matches!(heatmap_png(nan.view(), 4), Err(Error::InvalidArgument { name: "map", .. })));
    assert!(matches!(heatmap_png(Array2::zeros((0, 2)).view(), 4), Err(Error::EmptyInput(_))));
    assert!(matches!(heatmap_svg(Array2::zeros((2, 2)).view(), &two(), &two()[..1]), Err(Error::Shape(_))));
    let model = Gpt2::load(fixture("models/tiny-bpe")).unwrap();
    let tok = Tokenizer::gpt2().unwrap();
    assert!(matches!(AttentionView::from_text(&model, &tok, ""), Err(Error::EmptyInput(_))));
    let dir = std::env::temp_dir().join(format!("gpt2-inspect-missing-{}", std::process::id())).join("nested");
    assert!(view.write_png(&dir.join("x.png"), 0, 0, 4).is_err());
}

/// Opens the head view and the PNG in headless Chromium when one is installed (set
/// `GPT2_REQUIRE_BROWSER=1` to make a missing browser a failure).
#[test]
fn html_and_png_open_in_headless_chromium() {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| std::process::Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    let Some(browser) = browser else {
        assert!(std::env::var_os("GPT2_REQUIRE_BROWSER").is_none(), "no headless browser found");
        eprintln!("SKIPPED: no chromium found");
        return;
    };
    let view = bpe_view();
    let dir = std::env::temp_dir().join(format!("gpt2-inspect-browser-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    view.write_html(&dir.join("attention.html"), "tiny-bpe").unwrap();
    view.write_png(&dir.join("heat.png"), 1, 0, 10).unwrap();
    view.write_svg(&dir.join("heat.svg"), 1, 0).unwrap();
    std::fs::write(
        dir.join("images.html"),
        "<!DOCTYPE html><html><body><img id=p src=\"heat.png\"><img id=s src=\"heat.svg\"><script>\
         window.addEventListener('load', () => { for (const id of ['p', 's']) { const i = document.getElementById(id); \
         document.body.dataset[id] = i.complete && i.naturalWidth > 0 ? i.naturalWidth + 'x' + i.naturalHeight : 'broken'; } });\
         </script></body></html>",
    )
    .unwrap();
    let dump = |page: &str| -> String {
        let out = std::process::Command::new("timeout")
            .args(["90", browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .args(["--virtual-time-budget=3000", "--dump-dom"])
            .arg(format!("file://{}", dir.join(page).display()))
            .output()
            .expect("browser runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = dump("attention.html");
    let t = view.tokens().len();
    assert!(dom.contains("data-ready=\"1\""), "scripts did not run:\n{}", &dom[..dom.len().min(2000)]);
    assert!(dom.contains(&format!("layers=2 heads=4 tokens={t}")), "status line missing");
    assert_eq!(dom.matches("<canvas").count(), 2 * 4, "one thumbnail per layer and head");
    assert_eq!(dom.matches("<td title=").count(), t * t, "one matrix cell per weight");
    let side = t * 11 + 1;
    let dom = dump("images.html");
    assert!(dom.contains(&format!("data-p=\"{side}x{side}\"")), "PNG did not decode:\n{dom}");
    assert!(dom.contains("data-s=\"") && !dom.contains("data-s=\"broken\""), "SVG did not load:\n{dom}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inspection_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<BpeTracer>();
    assert_send_sync::<WordTokenizer>();
    assert_send_sync::<CharTokenizer>();
    assert_send_sync::<CausalSelfAttention>();
    assert_send_sync::<AttentionView>();
}
