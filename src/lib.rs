//! msctl
