//! The studio's Leptos pages (playground, library, versions, compare, evaluate).
//! Empty until the studio issue lands; the crate is in the workspace so the layout and
//! the build are in place from the start.
