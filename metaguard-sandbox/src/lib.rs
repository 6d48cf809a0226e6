//! Sandbox (filled in next).
