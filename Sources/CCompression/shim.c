// zlib and the Brotli encoder are the system's (zlib1g-dev, libbrotli-dev), linked through the
// module map; this file only makes the target a buildable C target.
