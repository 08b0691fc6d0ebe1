//! gRPC status codes: their names (metric labels, reports) and the one retry classification every
//! client uses.

use tonic::Code;

/// What a client does after a call failed with a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Transient: call again, from the last resume ticket when there is one. The server or its
    /// database went away (UNAVAILABLE), a connection broke mid-stream (tonic reports h2 failures as
    /// UNKNOWN or CANCELLED), a server-side limit or timeout was hit.
    Resume,
    /// The plan is stale (a relation was rewritten, a snapshot released): GetFlightInfo again.
    Replan,
    /// Repeats on retry: report it.
    Fatal,
}

/// How a client treats `code`.
pub fn classify(code: Code) -> Retry {
    match code {
        Code::Unavailable
        | Code::Unknown
        | Code::Cancelled
        | Code::Aborted
        | Code::ResourceExhausted
        | Code::DeadlineExceeded => Retry::Resume,
        Code::FailedPrecondition => Retry::Replan,
        _ => Retry::Fatal,
    }
}

/// gRPC's name for a status code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Client input quoted in an error message, cut to a bounded length so a huge input cannot make a
/// huge message (or overflow gRPC's header limit).
pub fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 200;
    if text.len() <= MAX {
        return text.into();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify(Code::Unavailable), Retry::Resume);
        assert_eq!(classify(Code::DeadlineExceeded), Retry::Resume);
        assert_eq!(classify(Code::FailedPrecondition), Retry::Replan);
        assert_eq!(classify(Code::NotFound), Retry::Fatal);
        assert_eq!(classify(Code::InvalidArgument), Retry::Fatal);
        assert_eq!(code_name(Code::OutOfRange), "OUT_OF_RANGE");
    }

    #[test]
    fn clip_bounds_long_input() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(10_000);
        let c = clip(&long);
        assert!(c.len() < 260, "{}", c.len());
        assert!(c.ends_with("(20000 bytes)"));
    }
}
