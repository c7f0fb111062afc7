//! Creating processes: `clone` (clone3 with a fallback), the container's init (`init`), and the
//! steps an init or an exec'd process takes before execve (`setup`).

pub mod clone;
pub mod init;
pub mod setup;
