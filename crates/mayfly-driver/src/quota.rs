//! Disk limits on writable layers: project quotas on the state filesystem.
