//! `[control]`: read from the file ([`parse_control`]), then checked on the model
//! ([`check_control`]).
use crate::error::{invalid, Invalid, Spans};
use crate::model::*;
use crate::raw::*;

/// Reads `[control]`, recording where its keys are.
pub(crate) fn parse_control(c: &RawControl, spans: &mut Spans) -> Control {
    let d = Control::default();
    if let Some(p) = &c.socket {
        spans.put("control.socket", p.span());
    }
    if let Some(g) = &c.group {
        spans.put("control.group", g.span());
    }
    if let Some(v) = &c.drain_timeout {
        spans.put("control.drain_timeout", v.span());
    }
    Control {
        socket: c.socket.as_ref().map_or(d.socket, |p| p.get_ref().into()),
        group: c.group.as_ref().map(|g| g.get_ref().clone()),
        drain_timeout_s: c
            .drain_timeout
            .as_ref()
            .map_or(d.drain_timeout_s, |v| *v.get_ref()),
    }
}

/// The rules `[control]` must follow.
pub(crate) fn check_control(c: &Control) -> Result<(), Invalid> {
    let socket = c.socket.to_string_lossy();
    if !socket.starts_with('/') || socket.len() > 100 {
        return invalid(
            "control.socket",
            format!("`{socket}` is not a usable socket path"),
            "give an absolute path of at most 100 bytes, such as \"/run/sluice/control.sock\"",
        );
    }
    if c.group.as_ref().is_some_and(|g| g.is_empty()) {
        return invalid(
            "control.group",
            "the group name is empty",
            "name a group, or leave `group` out for mode 0600 (root only)",
        );
    }
    if c.drain_timeout_s > 86_400 {
        return invalid(
            "control.drain_timeout",
            format!("{} s is out of range", c.drain_timeout_s),
            "give whole seconds from 0 to 86400 (a day)",
        );
    }
    Ok(())
}
