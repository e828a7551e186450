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

/// The shipped production configuration passes `vigil config check`, and the systemd unit
/// passes `systemd-analyze verify` (where the machine has it), pointed at this build's binary.
#[test]
#[allow(clippy::print_stderr)] // Says so when a machine cannot verify the unit.
fn the_deploy_files_are_valid() {
    let deploy = crate::util::repo().join("deploy");
    let wd = Workdir::new();
    let config = deploy.join("vigil.toml");
    let (out, _) = wd.ok_with(
        &["--config", config.to_str().unwrap(), "config", "check"],
        b"",
        &[],
    );
    // The file's own settings (the tests' environment moves the metrics listener to port 0),
    // and no setting taken for a secret by a word inside it.
    assert!(
        out.contains("[metrics]") && out.contains("0.0.0.0:8701"),
        "{out}"
    );
    assert!(out.contains("tokenizer = \"/"), "{out}");

    let unit = std::fs::read_to_string(deploy.join("vigil.service")).unwrap();
    assert!(unit.contains(
        "ExecStart=/usr/local/bin/vigil --config /etc/vigil/vigil.toml run --kafka --api"
    ));
    let Some(analyze) = crate::util::which("systemd-analyze") else {
        eprintln!("systemd-analyze is not on this machine: the unit is not verified");
        return;
    };
    let local = wd.path("vigil.service");
    std::fs::write(
        &local,
        unit.replace("/usr/local/bin/vigil", env!("CARGO_BIN_EXE_vigil")),
    )
    .unwrap();
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&local)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
