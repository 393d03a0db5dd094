//! NHS numbers: ten digits, the last a modulus 11 check digit.

/// The FHIR identifier system for NHS numbers.
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";

/// The check digit for nine leading digits: `None` when the modulus 11
/// algorithm gives 10 (no valid NHS number starts with those nine digits).
pub fn check_digit(first_nine: &[u8; 9]) -> Option<u8> {
    let sum: u32 = first_nine.iter().zip((2..=10u32).rev()).map(|(&d, weight)| u32::from(d) * weight).sum();
    match 11 - (sum % 11) {
        11 => Some(0),
        10 => None,
        check => Some(check as u8),
    }
}

/// Normalises and validates an NHS number: spaces and hyphens are dropped
/// (`999 000 0018` is accepted), then it must be ten digits with a correct
/// modulus 11 check digit and not one digit repeated (`1111111111` passes
/// the modulus check but is not issued). Returns the ten digits.
pub fn normalise(candidate: &str) -> Option<String> {
    let digits: String = candidate.chars().filter(|c| *c != ' ' && *c != '-').collect();
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let d: Vec<u8> = digits.bytes().map(|b| b - b'0').collect();
    if d.iter().all(|&x| x == d[0]) {
        return None;
    }
    let mut first_nine = [0u8; 9];
    first_nine.copy_from_slice(&d[..9]);
    (check_digit(&first_nine) == Some(d[9])).then_some(digits)
}

/// True for a valid NHS number (see [`normalise`]).
pub fn is_valid(candidate: &str) -> bool {
    normalise(candidate).is_some()
}

/// The `n`-th synthetic NHS number in the `999` test range (never issued to
/// a person), valid and distinct for every `n < 500_000`. Deterministic:
/// benchmarks and test doubles can generate as many patients as they need.
pub fn synthetic(n: u32) -> String {
    let n = n % 500_000;
    let base = 999_000_000 + 2 * n;
    for candidate in [base, base + 1] {
        let digits: Vec<u8> = candidate.to_string().bytes().map(|b| b - b'0').collect();
        let mut first_nine = [0u8; 9];
        first_nine.copy_from_slice(&digits);
        if let Some(check) = check_digit(&first_nine) {
            return format!("{candidate}{check}");
        }
    }
    // Two consecutive bases never both give 10 (their weighted sums differ
    // by a non-multiple of 11); the test below checks every n.
    unreachable!("no check digit for {base} or {}", base + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_nhs_numbers_pass_the_modulus_11_check() {
        // 943 476 5919 is the NHS's published example.
        assert!(is_valid("9434765919"));
        assert!(is_valid("943 476 5919"));
        assert!(is_valid("9990000018"));
        assert!(!is_valid("9434765918"));
        assert!(!is_valid("943476591"));
        assert!(!is_valid("94347659190"));
        assert!(!is_valid("1111111111"));
        assert!(!is_valid("94347A5919"));
    }

    #[test]
    fn nine_digits_whose_check_would_be_10_have_no_valid_number() {
        // Weighted sum 1: check digit 10.
        assert_eq!(check_digit(&[0, 0, 0, 0, 0, 0, 0, 0, 0]), Some(0));
        let mut found = false;
        for last in 0..=9u8 {
            let nine = [9, 9, 9, 0, 0, 0, 0, 0, last];
            if check_digit(&nine).is_none() {
                found = true;
            }
        }
        assert!(found);
    }

    #[test]
    fn every_synthetic_number_is_valid_distinct_and_in_the_999_range() {
        let mut seen = std::collections::HashSet::new();
        for n in 0..500_000 {
            let nhs = synthetic(n);
            assert!(nhs.starts_with("999"), "{nhs}");
            assert!(is_valid(&nhs), "{nhs}");
            assert!(seen.insert(nhs));
        }
    }
}
