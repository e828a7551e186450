//! vigil's integration tests: one binary, grouped by area. They run the real `vigil` command
//! against real sled stores and files in temporary directories.

mod util;

mod crash;
mod privacy;
mod resources;
mod run;
mod schema;
mod tidy;
