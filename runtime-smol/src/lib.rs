//! aether on smol (in progress).
