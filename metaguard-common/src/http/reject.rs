//! Why a request was refused. The numbers are stable: events carry them.

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    BadMethod = 1,
    BadTarget = 2,
    TargetTooLong = 3,
    TooDeep = 4,
    EncodedSlash = 5,
    Backslash = 6,
    Nul = 7,
    BadPercent = 8,
    DotAboveRoot = 9,
    Fragment = 10,
    AsteriskForm = 11,
    BadVersion = 12,
    BareCr = 13,
    BareLf = 14,
    ObsFold = 15,
    BadHeaderName = 16,
    SpaceBeforeColon = 17,
    BadHeaderValue = 18,
    DuplicateContentLength = 19,
    BadContentLength = 20,
    TransferEncoding = 21,
    HeaderBlockTooLarge = 22,
    NonAscii = 23,
    /// The stored parser state holds values `feed` never writes.
    BadState = 24,
    /// Kernel only: a request cut off after another one in the same send.
    SplitPipeline = 25,
}

impl Reject {
    /// Every reason, in number order.
    pub const ALL: [Reject; 25] = [
        Reject::BadMethod,
        Reject::BadTarget,
        Reject::TargetTooLong,
        Reject::TooDeep,
        Reject::EncodedSlash,
        Reject::Backslash,
        Reject::Nul,
        Reject::BadPercent,
        Reject::DotAboveRoot,
        Reject::Fragment,
        Reject::AsteriskForm,
        Reject::BadVersion,
        Reject::BareCr,
        Reject::BareLf,
        Reject::ObsFold,
        Reject::BadHeaderName,
        Reject::SpaceBeforeColon,
        Reject::BadHeaderValue,
        Reject::DuplicateContentLength,
        Reject::BadContentLength,
        Reject::TransferEncoding,
        Reject::HeaderBlockTooLarge,
        Reject::NonAscii,
        Reject::BadState,
        Reject::SplitPipeline,
    ];

    /// The reason for a stored number; unknown numbers mean a corrupt state.
    #[inline(always)]
    pub fn from_u8(n: u8) -> Reject {
        match Self::ALL.get(n.wrapping_sub(1) as usize) {
            Some(r) => *r,
            None => Reject::BadState,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Reject::BadMethod => "bad-method",
            Reject::BadTarget => "bad-target",
            Reject::TargetTooLong => "target-too-long",
            Reject::TooDeep => "too-deep",
            Reject::EncodedSlash => "encoded-slash",
            Reject::Backslash => "backslash",
            Reject::Nul => "nul",
            Reject::BadPercent => "bad-percent",
            Reject::DotAboveRoot => "dot-above-root",
            Reject::Fragment => "fragment",
            Reject::AsteriskForm => "asterisk-form",
            Reject::BadVersion => "bad-version",
            Reject::BareCr => "bare-cr",
            Reject::BareLf => "bare-lf",
            Reject::ObsFold => "obs-fold",
            Reject::BadHeaderName => "bad-header-name",
            Reject::SpaceBeforeColon => "space-before-colon",
            Reject::BadHeaderValue => "bad-header-value",
            Reject::DuplicateContentLength => "duplicate-content-length",
            Reject::BadContentLength => "bad-content-length",
            Reject::TransferEncoding => "transfer-encoding",
            Reject::HeaderBlockTooLarge => "header-block-too-large",
            Reject::NonAscii => "non-ascii",
            Reject::BadState => "bad-state",
            Reject::SplitPipeline => "split-pipeline",
        }
    }
}
