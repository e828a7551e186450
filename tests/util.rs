//! Shared fixtures: a temporary working directory per test with its own configuration, and a
//! runner for the real `vigil` binary that prints everything useful when a command fails.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use vigil_core::ResourceRegistry;
use vigil_storage::{StorageConfig, StorageError, StoredRecord, Stores};

/// The repository root.
///
/// Read when the test runs (cargo sets it for the test binary), not baked in when it is built:
/// a target directory shared by clones at different paths would otherwise run one clone's
/// tests against another's files.
pub fn repo() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// A working directory with the shipped sample: its registry, its keys and its traffic
/// (`traffic.jsonl`).
pub fn sample_workdir() -> Workdir {
    let wd = Workdir::new();
    let sample = repo().join("sample");
    wd.write(
        "resources.toml",
        fs::read(sample.join("resources.toml")).unwrap(),
    );
    for key in fs::read_dir(sample.join("keys")).unwrap() {
        let key = key.unwrap();
        wd.write(
            &format!("keys/{}", key.file_name().to_string_lossy()),
            fs::read(key.path()).unwrap(),
        );
    }
    wd.write(
        "traffic.jsonl",
        fs::read(sample.join("traffic.jsonl")).unwrap(),
    );
    wd
}

/// A working directory with a `vigil.toml`, removed when dropped.
pub struct Workdir {
    dir: tempfile::TempDir,
}

/// The default test configuration; `extra` is appended (TOML sections).
pub const CONFIG: &str = r#"
resources = "resources.toml"
[ingest]
dead_letters = "var/dead-letters.jsonl"
[storage]
data_dir = "var/data"
master_key = "keys/master.key"
"#;

impl Workdir {
    pub fn new() -> Self {
        let wd = Self {
            dir: tempfile::tempdir().expect("temporary directory"),
        };
        wd.write("vigil.toml", CONFIG);
        wd
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    /// A `vigil` command in this directory, isolated from the caller's VIGIL_* settings. It
    /// uses the repository's models (the encoder's as `scripts/setup-python.sh` prepared it),
    /// abuse policy, ONNX Runtime and local review model: the
    /// binary may be built outside the repository (CARGO_TARGET_DIR), where it would not find
    /// them by itself. The LLM reviewer is off; tests that want it set `VIGIL_REVIEW__ENABLED`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
        cmd.args(args).current_dir(self.root());
        for (key, _) in std::env::vars() {
            if key.starts_with("VIGIL_") {
                cmd.env_remove(key);
            }
        }
        for (setting, file) in [
            ("VIGIL_DETECTORS__MODEL", "models/harm-linear.onnx"),
            (
                "VIGIL_DETECTORS__SEMANTIC__MODEL",
                "models/harm-semantic.onnx",
            ),
            (
                "VIGIL_DETECTORS__SEMANTIC__ENCODER__MODEL",
                "models/encoder/use-multilingual-v3.onnx",
            ),
            (
                "VIGIL_DETECTORS__SEMANTIC__ENCODER__TOKENIZER",
                "models/encoder/use-multilingual-v3.spm",
            ),
            ("VIGIL_ABUSE__POLICY", "policies/abuse.toml"),
        ] {
            cmd.env(setting, repo().join(file));
        }
        // Tests run side by side: each vigil's metrics listener takes a free port.
        cmd.env("VIGIL_METRICS__LISTEN", "127.0.0.1:0");
        // The LLM reviewer is slow on two cores: off unless a test turns it on (tests/review.rs).
        cmd.env("VIGIL_REVIEW__ENABLED", "false");
        if std::env::var_os("ORT_DYLIB_PATH").is_none() {
            if let Some(library) = vigil_detectors::runtime::in_virtualenv(&repo()) {
                cmd.env("ORT_DYLIB_PATH", library);
            }
        }
        if let Some(model) = vigil_review::local::in_virtualenv(&repo()) {
            cmd.env("VIGIL_REVIEW__LOCAL__MODEL", model);
        }
        cmd
    }

    /// Runs `vigil` with `stdin`, returning its output whatever the exit status.
    pub fn output(&self, args: &[&str], stdin: &[u8], envs: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        cmd.envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("vigil starts");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs `vigil` and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, b"", &[]).0
    }

    /// Runs `vigil sql` as CSV and requires success; returns its lines (header first).
    pub fn sql(&self, query: &str) -> Vec<String> {
        self.ok(&["sql", query, "--format", "csv"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Runs `vigil` with stdin and environment, requires success; returns stdout and stderr.
    pub fn ok_with(&self, args: &[&str], stdin: &[u8], envs: &[(&str, &str)]) -> (String, String) {
        let out = self.output(args, stdin, envs);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "vigil {args:?} failed ({}) in {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status,
            self.root().display()
        );
        (stdout, stderr)
    }

    /// Runs `vigil` and requires failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.output(args, b"", &[]);
        assert!(
            !out.status.success(),
            "vigil {args:?} succeeded in {}",
            self.root().display()
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `vigil run --format json` over `input` (a path relative to this directory).
    pub fn run(&self, input: &str) -> Value {
        self.run_with(input, &[])
    }

    /// The same, with `envs` set (settings for this run only).
    pub fn run_with(&self, input: &str, envs: &[(&str, &str)]) -> Value {
        self.summary(&["run", "--input", input, "--format", "json"], envs)
    }

    /// Runs `vigil` with `args` (which ask for JSON) and `envs`, requiring success; returns
    /// the JSON it printed.
    pub fn summary(&self, args: &[&str], envs: &[(&str, &str)]) -> Value {
        serde_json::from_str(&self.ok_with(args, b"", envs).0).expect("the JSON summary parses")
    }

    /// The dead letters written so far.
    pub fn dead_letters(&self) -> Vec<Value> {
        match fs::read_to_string(self.path("var/dead-letters.jsonl")) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).expect("a dead letter is JSON"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The registry and stores as `vigil run` left them (open only after runs have ended).
    pub fn open_stores(&self) -> (ResourceRegistry, Stores) {
        self.open_stores_at("var/data")
    }

    /// The same, for runs that kept their stores in `data_dir` (relative to the workdir).
    pub fn open_stores_at(&self, data_dir: &str) -> (ResourceRegistry, Stores) {
        let registry = ResourceRegistry::load(&self.path("resources.toml")).unwrap();
        let config = StorageConfig {
            data_dir: self.path(data_dir),
            master_key: self.path("keys/master.key"),
            ..StorageConfig::default()
        };
        let stores = Stores::open(&config, self.root()).unwrap();
        (registry, stores)
    }

    /// Reads one stored record the way a reader with `resource` as the registry describes it
    /// would; `view` may change that description first (say, drop its customer key).
    pub fn read_stored(
        &self,
        resource: &str,
        request: &str,
        view: impl FnOnce(&mut vigil_core::Resource),
    ) -> Result<Option<StoredRecord>, StorageError> {
        let (registry, stores) = self.open_stores();
        let mut resource = registry
            .get(resource)
            .expect("a registered resource")
            .clone();
        view(&mut resource);
        let store = stores.geo(&resource.geography)?;
        store.get(&resource, &request.parse().expect("a valid request ID"))
    }

    /// Every file under `rel`, recursively.
    pub fn files_under(&self, rel: &str) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.path(rel), &mut out);
        out
    }

    /// The files under `rel` whose bytes contain `needle`.
    pub fn files_containing(&self, rel: &str, needle: &[u8]) -> Vec<PathBuf> {
        self.files_under(rel)
            .into_iter()
            .filter(|p| {
                let bytes = fs::read(p).unwrap_or_default();
                bytes.windows(needle.len()).any(|w| w == needle)
            })
            .collect()
    }
}

/// A valid record as one JSON line.
pub fn record(request: &str, resource: &str, geography: &str, prompt: &str) -> String {
    serde_json::json!({
        "request_id": request,
        "resource_id": resource,
        "geography": geography,
        "deployment": "global",
        "processed_in": "eastus",
        "timestamp": "2026-11-20T10:00:00Z",
        "operation": "chat",
        "model": "gpt-4o",
        "end_user": "user-1",
        "prompt": prompt,
        "completion": format!("reply to {prompt}"),
    })
    .to_string()
}

/// A JSON number from a summary, as u64 (0 when absent).
pub fn count(v: &Value, path: &[&str]) -> u64 {
    let mut v = v;
    for key in path {
        match v.get(key) {
            Some(next) => v = next,
            None => return 0,
        }
    }
    v.as_u64().unwrap_or(0)
}

/// The sum of a summary's per-key counts (`stored` per geography, `rejected` per reason).
pub fn total(v: &Value, key: &str) -> u64 {
    v[key]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

/// A registry for tests: two resources in `us`, one in `eu` with content logging off, one in
/// `eu` with a customer-managed key (`keys/keyed.key`, which tests create when they need it).
pub const REGISTRY: &str = r#"
[[resources]]
id = "a"
geography = "us"

[[resources]]
id = "b"
geography = "us"

[[resources]]
id = "quiet"
geography = "eu"
content_logging = false

[[resources]]
id = "keyed"
geography = "eu"
customer_key = "file:keys/keyed.key"
"#;

/// A `vigil run` reading standard input, fed a few lines at a time.
pub struct Feeding {
    /// The running `vigil run`.
    pub child: std::process::Child,
}

impl Feeding {
    pub fn start(wd: &Workdir, envs: &[(&str, &str)]) -> Self {
        Self::start_with(wd, &[], envs)
    }

    /// With more arguments to `vigil run`.
    pub fn start_with(wd: &Workdir, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut run = vec!["run", "--input", "-", "--format", "json"];
        run.extend_from_slice(args);
        let child = wd
            .command(&run)
            .envs([
                ("VIGIL_DETECTORS__ENABLED", "false"),
                ("VIGIL_ABUSE__ENABLED", "false"),
            ])
            .envs(envs.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("vigil run starts");
        Self { child }
    }

    /// Sends records `ids` of `resource`, then gives vigil time to seal them.
    pub fn send(&mut self, resource: &str, ids: &[&str]) {
        for id in ids {
            self.write(&record(id, resource, "eu", &format!("MARKER-{id}")));
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }

    /// Sends one line as it is.
    pub fn send_line(&mut self, line: &str) {
        self.write(line);
    }

    fn write(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Ends the input; returns the run's summary.
    pub fn finish(mut self) -> Value {
        drop(self.child.stdin.take());
        let out = self.child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        serde_json::from_slice(&out.stdout).expect("the JSON summary parses")
    }
}

/// A plain HTTP GET of `url`: its status and body, or status 0 when nothing answers.
pub fn http_get(url: &str) -> (u16, String) {
    match ureq::get(url).call() {
        Ok(response) => (response.status(), response.into_string().unwrap()),
        Err(ureq::Error::Status(status, response)) => (status, response.into_string().unwrap()),
        Err(_) => (0, String::new()),
    }
}

/// The sum of a series' samples in a `/metrics` exposition (0 when it has none).
pub fn series_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The path of `program` on `PATH`, if it is there.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}
