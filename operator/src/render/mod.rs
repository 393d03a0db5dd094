//! Pure rendering: spec + platform settings + observed facts -> the exact
//! objects the controller applies and `ics-operator render` prints.
//!
//! Nothing here performs I/O. Each child has its own small builder function so
//! that a reviewer can find what an object looks like in one place.

pub mod agreement;
pub mod child;
pub mod connector;
pub mod gateway;
pub mod labels;
pub mod pod;
pub mod tenant;
pub mod validate;

pub use child::{Child, ChildKind};
