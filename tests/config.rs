//! `vigil config check`: the settings in effect, secrets redacted, and refusals that name the
//! setting; variables vigil does not own never make the configuration invalid.

use crate::util::Workdir;

#[test]
fn config_check_prints_the_settings_in_effect_and_names_what_is_wrong() {
    let wd = Workdir::new();
    wd.write(
        "vigil.toml",
        format!(
            "{}[kafka.client]\n\"sasl.password\" = \"hunter2-secret\"\n",
            crate::util::CONFIG
        ),
    );
    let (out, _) = wd.ok_with(
        &["config", "check"],
        b"",
        &[
            ("VIGIL_BIN", "/opt/vigil"),
            ("VIGIL_API__MAX_CONNECTIONS", "64"),
        ],
    );
    assert!(out.starts_with("# configuration valid"), "{out}");
    assert!(out.contains("max_connections = 64"), "{out}");
    assert!(out.contains("data_dir = \"var/data\""), "{out}");
    assert!(!out.contains("hunter2"), "a secret in the output: {out}");
    assert!(out.contains("<redacted>"), "{out}");

    let out = wd.output(
        &["config", "check"],
        b"",
        &[("VIGIL_API__MAX_CONNECTIONS", "0")],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("api.max_connections"), "{stderr}");
    // A scripts' own variable is not a setting; a section's misspelt key is an error.
    let out = wd.output(
        &["config", "check"],
        b"",
        &[("VIGIL_API__MAX_CONECTIONS", "1")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_conections"));
}
