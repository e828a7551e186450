//! vigil's integration tests: one binary, grouped by area. They run the real `vigil` command
//! against real sled stores and files in temporary directories, and a real Kafka-protocol
//! broker (Tansu) on loopback, and LLM servers (llama.cpp, and a scripted one) on loopback.

mod broker;
mod llm;
mod util;

mod abuse;
mod api;
mod cluster;
mod config;
mod console;
mod crash;
mod detect;
mod docs;
mod kafka;
mod lifecycle;
mod monitoring;
mod notebooks;
mod privacy;
mod resources;
mod review;
mod run;
mod schema;
mod tidy;
