//! PostgreSQL's binary `numeric` (`numeric_send`): exact text, or a scaled `i128` for `Decimal128`.
//!
//! Wire form, big-endian: `i16 ndigits, i16 weight, u16 sign, u16 dscale`, then `ndigits` base-10000
//! digits (`i16`, 0..=9999). Digit `i` is worth `10000^(weight - i)`.

use super::decode::ValueError;

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;
/// PostgreSQL keeps the display scale in 14 bits.
const MAX_DSCALE: u16 = 0x3FFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sign {
    Pos,
    Neg,
    NaN,
    PosInf,
    NegInf,
}

/// A validated binary numeric, borrowing its digits from the input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Numeric<'a> {
    sign: Sign,
    weight: i32,
    dscale: usize,
    /// `ndigits` big-endian `i16` digits, each checked to be in 0..=9999.
    digits: &'a [u8],
}

impl<'a> Numeric<'a> {
    pub(crate) fn parse(v: &'a [u8]) -> Result<Self, ValueError> {
        let Some((head, digits)) = v.split_first_chunk::<8>() else {
            return Err(ValueError::malformed(format!(
                "numeric of {} bytes is shorter than its 8-byte header",
                v.len()
            )));
        };
        let ndigits = i16::from_be_bytes([head[0], head[1]]);
        let weight = i16::from_be_bytes([head[2], head[3]]);
        let sign = u16::from_be_bytes([head[4], head[5]]);
        let dscale = u16::from_be_bytes([head[6], head[7]]);
        let expected = usize::try_from(ndigits)
            .map_err(|_| ValueError::malformed(format!("numeric with {ndigits} digits")))?
            * 2;
        if digits.len() != expected {
            return Err(ValueError::malformed(format!(
                "numeric with {ndigits} digits has {} digit bytes",
                digits.len()
            )));
        }
        let sign = match sign {
            NUMERIC_POS => Sign::Pos,
            NUMERIC_NEG => Sign::Neg,
            NUMERIC_NAN => Sign::NaN,
            NUMERIC_PINF => Sign::PosInf,
            NUMERIC_NINF => Sign::NegInf,
            other => return Err(ValueError::malformed(format!("numeric sign {other:#06x}"))),
        };
        if dscale > MAX_DSCALE {
            return Err(ValueError::malformed(format!("numeric dscale {dscale}")));
        }
        if !matches!(sign, Sign::Pos | Sign::Neg) && ndigits != 0 {
            return Err(ValueError::malformed("special numeric with digits"));
        }
        for pair in digits.chunks_exact(2) {
            let d = i16::from_be_bytes([pair[0], pair[1]]);
            if !(0..10000).contains(&d) {
                return Err(ValueError::malformed(format!("numeric digit {d}")));
            }
        }
        Ok(Numeric {
            sign,
            weight: i32::from(weight),
            dscale: usize::from(dscale),
            digits,
        })
    }

    fn ndigits(&self) -> i32 {
        // At most i16::MAX digits (checked in parse).
        (self.digits.len() / 2) as i32
    }

    /// Digit `i` (PostgreSQL's `digits[i]`), 0 outside the stored digits.
    fn digit(&self, i: i32) -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.digits.get(2 * i..2 * i + 2))
            .map_or(0, |p| u16::from_be_bytes([p[0], p[1]]))
    }

    /// Appends the value exactly as PostgreSQL's `numeric_out` prints it (`get_str_from_var`).
    pub(crate) fn write_text(&self, out: &mut Vec<u8>) {
        match self.sign {
            Sign::NaN => return out.extend_from_slice(b"NaN"),
            Sign::PosInf => return out.extend_from_slice(b"Infinity"),
            Sign::NegInf => return out.extend_from_slice(b"-Infinity"),
            Sign::Neg => out.push(b'-'),
            Sign::Pos => {}
        }
        let mut d;
        if self.weight < 0 {
            d = self.weight + 1;
            out.push(b'0');
        } else {
            d = 0;
            while d <= self.weight {
                let dig = self.digit(d);
                if d == 0 {
                    // The first group without leading zeros (but "0" for zero).
                    let buf = itoa4(dig);
                    let skip = buf.iter().take(3).take_while(|c| **c == b'0').count();
                    out.extend_from_slice(&buf[skip..]);
                } else {
                    out.extend_from_slice(&itoa4(dig));
                }
                d += 1;
            }
        }
        if self.dscale > 0 {
            out.push(b'.');
            let end = out.len() + self.dscale;
            let mut i = 0;
            while i < self.dscale {
                out.extend_from_slice(&itoa4(self.digit(d)));
                d += 1;
                i += 4;
            }
            out.truncate(end);
        }
    }

    /// The value times `10^scale` as an `i128` of at most `precision` digits, or why not.
    /// Never rounds: digits beyond `scale` must be zero.
    pub(crate) fn to_decimal(self, precision: u8, scale: i8) -> Result<i128, ValueError> {
        let unrepresentable = |what: &str| {
            ValueError::Unrepresentable(format!(
                "{what} does not fit Decimal128({precision}, {scale})"
            ))
        };
        match self.sign {
            Sign::NaN => return Err(unrepresentable("NaN")),
            Sign::PosInf => return Err(unrepresentable("Infinity")),
            Sign::NegInf => return Err(unrepresentable("-Infinity")),
            Sign::Pos | Sign::Neg => {}
        }
        let mut acc: i128 = 0;
        for i in 0..self.ndigits() {
            let dig = self.digit(i);
            if dig == 0 {
                continue;
            }
            // Decimal exponent of this group's units digit in the scaled value.
            let e = 4 * (self.weight - i) + i32::from(scale);
            let part = if e >= 0 {
                usize::try_from(e)
                    .ok()
                    .and_then(|e| POW10.get(e))
                    .and_then(|p| p.checked_mul(i128::from(dig)))
            } else {
                match usize::try_from(-e).ok().and_then(|r| POW10.get(r)) {
                    Some(div) if i128::from(dig) % div == 0 => Some(i128::from(dig) / div),
                    _ => return Err(unrepresentable("a value with more fractional digits")),
                }
            };
            acc = part
                .and_then(|p| acc.checked_add(p))
                .ok_or_else(|| unrepresentable("a value with more digits"))?;
        }
        if acc >= POW10[usize::from(precision).min(38)] {
            return Err(unrepresentable("a value with more digits"));
        }
        Ok(if self.sign == Sign::Neg { -acc } else { acc })
    }
}

fn itoa4(d: u16) -> [u8; 4] {
    [
        b'0' + (d / 1000 % 10) as u8,
        b'0' + (d / 100 % 10) as u8,
        b'0' + (d / 10 % 10) as u8,
        b'0' + (d % 10) as u8,
    ]
}

/// `10^0 ..= 10^38`, all of which fit an `i128`.
const POW10: [i128; 39] = {
    let mut t = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// Test-only encoder: the binary form PostgreSQL's `numeric_send` produces for a decimal string.
#[cfg(test)]
pub(crate) fn encode(text: &str) -> Vec<u8> {
    let special = |sign: u16| [0u8, 0, 0, 0, (sign >> 8) as u8, sign as u8, 0, 0].to_vec();
    match text {
        "NaN" => return special(NUMERIC_NAN),
        "Infinity" => return special(NUMERIC_PINF),
        "-Infinity" => return special(NUMERIC_NINF),
        _ => {}
    }
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let dscale = frac.len();
    // Pad the integer part on the left and the fraction on the right to whole groups.
    let int_pad = (4 - int.len() % 4) % 4;
    let frac_pad = (4 - frac.len() % 4) % 4;
    let all: String = "0".repeat(int_pad) + int + frac + &"0".repeat(frac_pad);
    let mut groups: Vec<i16> = all
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap().parse().unwrap())
        .collect();
    let mut weight = ((int.len() + int_pad) / 4) as i32 - 1;
    // Strip leading and trailing zero groups, as PostgreSQL does.
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign = if neg && !groups.is_empty() {
        NUMERIC_NEG
    } else {
        NUMERIC_POS
    };
    let mut out = Vec::new();
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(dscale as u16).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        Numeric::parse(bytes).unwrap().write_text(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_round_trips() {
        for s in [
            "0",
            "0.00",
            "1",
            "-1",
            "1.50",
            "-1.50",
            "0.0001",
            "0.000012345",
            "-0.5",
            "10000",
            "9999",
            "12345678.9",
            "100000000000000000000000000000000000000000000000000",
            "123456789012345678901234567890.123456789012345678901234567890",
            "3.14159265358979323846264338327950288419716939937510",
            "0.00000000000000000000000000000000000000000000000001",
        ] {
            assert_eq!(text(&encode(s)), s, "{s}");
        }
        assert_eq!(text(&encode("NaN")), "NaN");
        assert_eq!(text(&encode("Infinity")), "Infinity");
        assert_eq!(text(&encode("-Infinity")), "-Infinity");
    }

    #[test]
    fn text_from_raw_digits() {
        // 12340000 stored as one digit with weight 1 (trailing zero group stripped).
        let raw = [0, 1, 0, 1, 0, 0, 0, 0, 0x04, 0xD2];
        assert_eq!(text(&raw), "12340000");
        // dscale shorter than the stored fraction: PostgreSQL truncates the printed digits.
        let raw = [0, 2, 0, 0, 0, 0, 0, 1, 0, 1, 0x13, 0x88];
        assert_eq!(text(&raw), "1.5");
        // Large weight: 10000^100.
        let mut raw = vec![0, 1, 0, 100, 0, 0, 0, 0, 0, 1];
        let s = text(&raw);
        assert_eq!(s.len(), 401);
        assert!(s.starts_with('1') && s[1..].bytes().all(|c| c == b'0'));
        raw[4] = 0x40;
        assert!(text(&raw).starts_with("-1000"));
    }

    #[test]
    fn malformed() {
        let cases: &[&[u8]] = &[
            &[],
            &[0, 0, 0, 0, 0, 0, 0],
            &[0, 1, 0, 0, 0, 0, 0, 0],
            &[0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10],
            &[0, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
            &[0, 0, 0, 0, 0x12, 0x34, 0, 0],
            &[0, 0, 0, 0, 0, 0, 0x40, 0],
            &[0xff, 0xff, 0, 0, 0, 0, 0, 0],
            &[0, 1, 0, 0, 0xC0, 0, 0, 0, 0, 1],
        ];
        for c in cases {
            assert!(
                matches!(Numeric::parse(c), Err(ValueError::Malformed(_))),
                "{c:?}"
            );
        }
    }

    fn dec(s: &str, p: u8, sc: i8) -> Result<i128, ValueError> {
        Numeric::parse(&encode(s)).unwrap().to_decimal(p, sc)
    }

    #[test]
    fn decimals() {
        assert_eq!(dec("0", 10, 2).unwrap(), 0);
        assert_eq!(dec("1.50", 10, 2).unwrap(), 150);
        assert_eq!(dec("-1.5", 10, 2).unwrap(), -150);
        assert_eq!(dec("12345678.91", 10, 2).unwrap(), 1_234_567_891);
        assert_eq!(dec("0.0001", 5, 4).unwrap(), 1);
        assert_eq!(dec("12000", 5, -3).unwrap(), 12);
        let max38 = "9".repeat(38);
        assert_eq!(dec(&max38, 38, 0).unwrap(), 10i128.pow(38) - 1);
        assert_eq!(
            dec(&format!("-{max38}"), 38, 0).unwrap(),
            1 - 10i128.pow(38)
        );
        let frac38 = format!("0.{max38}");
        assert_eq!(dec(&frac38, 38, 38).unwrap(), 10i128.pow(38) - 1);
        assert_eq!(
            dec(&format!("-{frac38}"), 38, 38).unwrap(),
            1 - 10i128.pow(38)
        );
        assert_eq!(
            dec("0.12345678901234567890123456789012345678", 38, 38).unwrap(),
            12345678901234567890123456789012345678
        );
        assert_eq!(
            dec("1234567890123456789.0123456789012345678", 38, 19).unwrap(),
            12345678901234567890123456789012345678
        );

        assert!(matches!(
            dec("1", 38, 38),
            Err(ValueError::Unrepresentable(_))
        ));
        assert!(matches!(
            dec(&format!("1{max38}"), 38, 0),
            Err(ValueError::Unrepresentable(_))
        ));
        assert!(matches!(
            dec("100", 2, 0),
            Err(ValueError::Unrepresentable(_))
        ));
        assert!(matches!(
            dec("1.234", 10, 2),
            Err(ValueError::Unrepresentable(_))
        ));
        assert!(matches!(
            dec("12345", 5, -3),
            Err(ValueError::Unrepresentable(_))
        ));
        let huge = format!("1{}", "0".repeat(60));
        assert!(matches!(
            dec(&huge, 38, 0),
            Err(ValueError::Unrepresentable(_))
        ));
        for s in ["NaN", "Infinity", "-Infinity"] {
            assert!(
                matches!(dec(s, 10, 2), Err(ValueError::Unrepresentable(_))),
                "{s}"
            );
        }
    }
}
