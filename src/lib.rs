//! # aim-token
//!
//! AVEVA Identity Manager (AIM) access tokens for AVEVA MES client
//! applications. (Crate guide: written at the end of the foundation work.)
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod authority;
mod cache;
mod client;
mod clock;
mod credentials;
mod discovery;
mod error;
mod exchange;
mod http;
mod mes;
mod registration;
mod token;

#[cfg(feature = "emulator")]
#[cfg_attr(docsrs, doc(cfg(feature = "emulator")))]
pub mod emulator;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod layer;
#[cfg(feature = "middleware")]
#[cfg_attr(docsrs, doc(cfg(feature = "middleware")))]
pub mod middleware;

pub use cache::Stats;
pub use client::{AimClient, AimClientBuilder};
pub use clock::{Clock, SystemClock, TokioClock};
pub use credentials::ClientAuthMethod;
pub use error::{Error, ErrorKind, Result};
pub use mes::MesClient;
pub use registration::{ClientRegistration, RegisteredClient, Verification};
pub use token::AccessToken;
