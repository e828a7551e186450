//! Bytes to a validated [`LogRecord`].

use vigil_core::LogRecord;

use crate::reject::RejectReason;

/// Decodes one line: UTF-8 first, then JSON and the record's field rules.
pub fn decode(line: &[u8]) -> Result<LogRecord, RejectReason> {
    let text = std::str::from_utf8(line).map_err(|e| RejectReason::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    Ok(LogRecord::from_json(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_is_its_own_reason() {
        let err = decode(b"{\"prompt\":\"\xff\"}").unwrap_err();
        assert_eq!(err, RejectReason::InvalidUtf8 { valid_up_to: 11 });
        assert_eq!(err.code(), "invalid_utf8");
    }

    #[test]
    fn json_errors_pass_through() {
        assert_eq!(decode(b"{").unwrap_err().code(), "malformed_json");
        assert_eq!(decode(b"{}").unwrap_err().code(), "missing_field");
        assert_eq!(decode(b"{}").unwrap_err().field(), Some("request_id"));
    }
}
