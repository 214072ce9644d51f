// The system's libcrypt (libxcrypt on Debian: bcrypt, yescrypt, SHA-crypt) is linked through
// the module map; this file only makes the target a buildable C target.
