//! `vigil config check`: validates the configuration (built-in defaults, then the file, then
//! `VIGIL_<SECTION>__<KEY>` variables) as the commands that use it do, and prints the
//! settings in effect, with anything secret redacted.

use super::output;
use crate::config::Config;

/// What stands in for a secret's value.
const REDACTED: &str = "<redacted>";

pub fn check(config: &Config) -> anyhow::Result<()> {
    config.validate()?;
    let mut settings = toml::Value::try_from(config)?;
    redact(&mut settings);
    output(format!(
        "# configuration valid; the settings in effect:\n{}",
        toml::to_string_pretty(&settings)?.trim_end()
    ))
}

/// Replaces the value of every key that names a secret (passwords, secrets, tokens: Kafka
/// client properties such as `sasl.password`), however deep.
fn redact(value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table.iter_mut() {
                if is_secret(key) {
                    *value = toml::Value::String(REDACTED.into());
                } else {
                    redact(value);
                }
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Whether a key names a secret: one of its words (split at `.`, `_` and `-`) is a password,
/// secret, token, credential, passphrase, private key or PEM. Whole words only: `max_tokens`
/// and `tokenizer` are settings.
fn is_secret(key: &str) -> bool {
    key.to_ascii_lowercase().split(['.', '_', '-']).any(|word| {
        [
            "password",
            "passwords",
            "passwd",
            "passphrase",
            "secret",
            "secrets",
            "token",
            "credential",
            "credentials",
            "private",
            "pem",
        ]
        .contains(&word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let mut value: toml::Value = toml::from_str(
            "[kafka.client]\n\"sasl.password\" = \"hunter2\"\n\"bootstrap.servers\" = \"b:9092\"\n[[x]]\nclient_secret = \"s\"\n",
        )
        .unwrap();
        redact(&mut value);
        let text = toml::to_string(&value).unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("\"s\""),
            "{text}"
        );
        assert!(text.contains("b:9092"), "{text}");
    }

    #[test]
    fn only_whole_words_name_secrets() {
        for key in [
            "sasl.password",
            "client_secret",
            "api-token",
            "ssl.key.password",
            "ssl.key.pem",
            "ssl.key.passphrase",
        ] {
            assert!(is_secret(key), "{key}");
        }
        for key in ["max_tokens", "tokenizer", "case_id_key", "secretary"] {
            assert!(!is_secret(key), "{key}");
        }
    }
}
