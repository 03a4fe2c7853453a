//! Browser tests for edulink (no library code).
//!
//! `tests/walk` starts both parties on `127.0.0.1:0`, drives Debian's `chromium` headless through
//! `chromedriver` (fantoccini), and walks the seed article's screens: linking, signing in, unlinking,
//! a phone-sized viewport, English, and no JavaScript. On every page it checks the console, the form
//! labels, the unlink dialog's focus handling and axe-core, and it saves a PNG of each step into
//! `$EDULINK_SCREENSHOTS` when set (`scripts/screenshots` regenerates `docs/screenshots/`).
//!
//! Without `/usr/bin/chromium` and `/usr/bin/chromedriver` the tests skip with a message, unless
//! `EDULINK_REQUIRE_BROWSER=1` (CI), which makes them fail instead.
