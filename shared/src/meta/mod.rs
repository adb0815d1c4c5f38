//! Meta types. `webhook`: the WhatsApp Cloud API webhook envelope and messages;
//! `messaging`: Messenger's and Instagram Direct's.
pub mod connection;
pub mod messaging;
pub mod webhook;
