//! Empty library target: lets hook-study declare a build-dependency on this
//! crate, so cargo rebuilds the kernel object when it changes.
#![no_std]
