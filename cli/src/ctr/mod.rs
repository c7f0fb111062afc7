//! Container commands: create, start, run, ps, logs, exec, stop, kill, rm, cp, stats, top,
//! pause, unpause, wait — with docker's flags, output and exit codes.
//!
//! One file per command family: [`create`] (create/run flags), [`attach`] (attach and exec
//! streams), [`ps`] (listing, inspect templates), [`logs`] (logs, stats), [`cp`].

mod attach;
mod cp;
mod create;
mod logs;
mod ps;

pub use attach::*;
pub use cp::*;
pub use create::*;
pub use logs::*;
pub use ps::*;

use berth_api::containers_client::ContainersClient;
use tonic::transport::Channel;

pub type Client = ContainersClient<Channel>;
