//! The running configuration written back as TOML, by the `Serialize` derived on the model
//! (so no key can be forgotten); `Config::from_toml` reads it back to an equal `Config`.

use crate::model::Config;

impl Config {
    /// The configuration as TOML, in the file's keys.
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| format!("cannot write the configuration as TOML: {e}"))
    }
}
