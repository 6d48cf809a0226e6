//! Policy model (filled in next).
