//! File events through inotify (notify crate). Being written.
