//! Meta types. `webhook`: the WhatsApp Cloud API webhook envelope and messages.
pub mod connection;
pub mod webhook;
