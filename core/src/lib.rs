//! vigil's shared vocabulary: the log record every stage passes along, its validation, and the
//! resource registry that says where each customer resource's data lives.
//!
//! Every other crate imports these types; this crate does no I/O beyond reading and writing the
//! registry file, and knows nothing of Kafka, sled or HTTP.
//!
//! Architecture invariant: no error message or `Debug` output built here contains prompt or
//! completion text. Errors name the field and the problem, never the offending value; the
//! [`Content`] type prints only lengths.

pub mod atomic_file;
pub mod case;
pub mod clock;
pub mod decision;
pub mod detection;
pub mod flag;
pub mod health;
pub mod ids;
pub mod key_file;
pub mod record;
pub mod resource;
pub mod verdict;

pub use case::{Case, CaseSignals};
pub use clock::{Clock, ClockError, Day};
pub use decision::{Decision, Outcome as DecisionOutcome};
pub use detection::{Detection, HarmScores};
pub use flag::{
    Category, FlagError, FlagEvent, FlagOrigin, FlagScores, FlagSubject, FlagWindow,
    FLAG_SCHEMA_VERSION,
};
pub use health::{Check, Health, Readiness};
pub use ids::{Geography, IdError, RequestId, ResourceId};
pub use record::{
    Content, Deployment, FieldProblem, LogRecord, Operation, RecordError, RecordMeta,
};
pub use resource::{Capability, KeyRef, RegistryError, Resource, ResourceRegistry};
pub use verdict::{Assessment, Route, RouteReason, Severity, Verdict};
