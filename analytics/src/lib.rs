//! vigil's analytics tables: Parquet exports of metadata (never content) and SQL over them.

mod config;

pub use config::AnalyticsConfig;
