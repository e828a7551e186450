//! Finding and loading ONNX Runtime.
//!
//! vigil links no ONNX Runtime at build time (`ort`'s `load-dynamic`): it loads the shared
//! library that PyPI's `onnxruntime==1.31.1` wheel ships, from the first of
//!
//! 1. the path configured (`detectors.onnxruntime` in `vigil.toml`),
//! 2. the `ORT_DYLIB_PATH` environment variable,
//! 3. the project's own virtual environment, `.venv/lib/python3*/site-packages/onnxruntime/capi/`,
//!    looked for in the working directory, the directories above it, and those above the `vigil`
//!    binary.
//!
//! The library is loaded once per process; every session shares one environment. A relative
//! model path is found the same way ([`resolve`]), so the shipped model serves a `vigil` run
//! from any directory.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use tracing::info;

use crate::DetectorError;

/// File name of the library in the wheel.
const LIBRARY: &str = "libonnxruntime.so.1.31.1";

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// The process's ONNX Runtime environment, loading the library on first use (see the module
/// docs for where it is looked for; `configured` is the configured path, if any).
pub fn environment(configured: Option<&Path>) -> Result<&'static Environment, DetectorError> {
    if let Some(environment) = ENVIRONMENT.get() {
        return Ok(environment);
    }
    let library = locate(configured)?;
    let builder = ort::init_from(&library).map_err(|e| DetectorError::OnnxRuntime {
        path: library.clone(),
        message: e.to_string(),
    })?;
    let environment = builder
        .with_name("vigil")
        .with_telemetry(false)
        .build()
        .map_err(|e| DetectorError::OnnxRuntime {
            path: library.clone(),
            message: e.to_string(),
        })?;
    info!(library = %library.display(), "Loaded ONNX Runtime.");
    Ok(ENVIRONMENT.get_or_init(|| environment))
}

/// Where the library is, or an error naming every place looked in.
pub fn locate(configured: Option<&Path>) -> Result<PathBuf, DetectorError> {
    if let Some(path) = configured {
        return existing(path.to_path_buf(), "detectors.onnxruntime");
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return existing(PathBuf::from(path), "ORT_DYLIB_PATH");
    }
    let mut searched = Vec::new();
    for root in project_roots() {
        searched.push(
            root.join(".venv/lib/python3*/site-packages/onnxruntime/capi")
                .join(LIBRARY),
        );
        if let Some(library) = in_virtualenv(&root) {
            return Ok(library);
        }
    }
    Err(DetectorError::OnnxRuntimeMissing { searched })
}

/// The library inside the virtual environment `root/.venv`, if it is installed there.
pub fn in_virtualenv(root: &Path) -> Option<PathBuf> {
    std::fs::read_dir(root.join(".venv").join("lib"))
        .ok()?
        .flatten()
        .map(|entry| {
            entry
                .path()
                .join("site-packages/onnxruntime/capi")
                .join(LIBRARY)
        })
        .find(|candidate| candidate.is_file())
}

/// Where a project's files (its `.venv`, its `models/`) may be: the working directory and each
/// directory above it (a run from a subdirectory of the project), then
/// each directory above the running binary (`target/release/vigil` lies inside the project).
pub fn project_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(dir) = std::env::current_dir() {
        roots.extend(dir.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    roots
}

/// `path` if it is absolute or exists; else the first project root (see [`project_roots`])
/// under which it exists; else `path` unchanged.
pub fn resolve(path: &Path) -> PathBuf {
    if path.is_absolute() || path.exists() {
        return path.to_path_buf();
    }
    project_roots()
        .into_iter()
        .map(|root| root.join(path))
        .find(|candidate| candidate.exists())
        .unwrap_or_else(|| path.to_path_buf())
}

fn existing(path: PathBuf, setting: &'static str) -> Result<PathBuf, DetectorError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(DetectorError::OnnxRuntimeNotAFile { path, setting })
    }
}

/// A model file read and opened in an ONNX Runtime session.
pub struct LoadedModel {
    /// Where it was found (see [`resolve`]).
    pub path: PathBuf,
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// A session over it, running on one thread (callers parallelise across texts).
    pub session: Session,
}

impl LoadedModel {
    /// The error for a model vigil cannot serve, naming this file.
    pub fn incompatible(&self, problem: String) -> DetectorError {
        DetectorError::ModelIncompatible {
            path: self.path.clone(),
            problem,
        }
    }

    /// The model's metadata entry `key` (`vigil.*`), or an error naming the file and the key.
    pub fn metadata(&self, key: &str) -> Result<String, DetectorError> {
        let metadata = self
            .session
            .metadata()
            .map_err(|e| self.incompatible(format!("no metadata: {e}")))?;
        metadata
            .custom(key)
            .ok_or_else(|| self.incompatible(format!("metadata lacks {key}")))
    }

    /// The model's name and version, as recorded in detections: `vigil.model@vigil.version`.
    pub fn name(&self) -> Result<String, DetectorError> {
        Ok(format!(
            "{}@{}",
            self.metadata("vigil.model")?,
            self.metadata("vigil.version")?
        ))
    }

    /// The model's output columns, in order (`vigil.heads`).
    pub fn heads(&self) -> Result<Vec<String>, DetectorError> {
        Ok(self
            .metadata("vigil.heads")?
            .split(',')
            .map(str::to_owned)
            .collect())
    }

    /// The metadata entry `key` as a probability, or an error naming it.
    pub fn probability(&self, key: &str) -> Result<f32, DetectorError> {
        self.metadata(key)?
            .parse::<f32>()
            .ok()
            .filter(|v| (0.0..=1.0).contains(v))
            .ok_or_else(|| self.incompatible(format!("{key} is not a number in [0, 1]")))
    }
}

/// Reads `model` (found as [`resolve`] finds it) and opens it with the process's ONNX Runtime
/// (`onnxruntime` is the configured library, if any). A file that cannot be read is
/// [`DetectorError::ModelUnreadable`]; one ONNX Runtime cannot load, [`DetectorError::ModelInvalid`].
pub fn load_model(model: &Path, onnxruntime: Option<&Path>) -> Result<LoadedModel, DetectorError> {
    let path = resolve(model);
    let bytes = std::fs::read(&path).map_err(|source| DetectorError::ModelUnreadable {
        path: path.clone(),
        source,
    })?;
    let environment = environment(onnxruntime)?;
    let session = Session::builder(environment)
        .and_then(|b| {
            b.with_optimization_level(GraphOptimizationLevel::Level3)
                .map_err(Into::into)
        })
        .and_then(|b| b.with_intra_threads(1).map_err(Into::into))
        .and_then(|mut b| b.commit_from_memory(&bytes))
        .map_err(|e| DetectorError::ModelInvalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
    Ok(LoadedModel {
        path,
        bytes,
        session,
    })
}
