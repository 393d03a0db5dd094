//! Synthetic but realistic ADT and ORU messages, as an English trust's PAS
//! and LIMS send them, for tests, benchmarks and the e2e HL7 v2 sender
//! double. Every patient has a valid NHS number from the `999` test range
//! (never issued to a person), a UK address and a registered GP practice.
//!
//! ```
//! use carerecord_hl7v2::fixtures::{self, AdtEvent, SyntheticPatient};
//!
//! let patient = SyntheticPatient::nth(7);
//! let a01 = fixtures::adt(AdtEvent::A01, &patient, "V000007", "MSG000007", "20261125093000");
//! let wire = carerecord_hl7v2::mllp::frame(&a01);
//! # assert!(carerecord_hl7v2::message::Message::parse(&a01).is_ok());
//! # assert_eq!(wire[0], 0x0B);
//! ```

use crate::nhs;

/// The sending application of generated ADT messages (MSH-3).
pub const PAS: &str = "PAS";
/// The sending application of generated ORU messages (MSH-3).
pub const LIMS: &str = "LIMS";
/// The sending facility (MSH-4): a trust ODS code.
pub const FACILITY: &str = "RBT";

/// A synthetic patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticPatient {
    /// Ten digits, valid, `999` range.
    pub nhs_number: String,
    /// The trust's hospital number (PID-3, type MR).
    pub hospital_number: String,
    /// Surname.
    pub family: String,
    /// First given name.
    pub given: String,
    /// Middle name, may be empty.
    pub middle: String,
    /// e.g. `MRS`.
    pub title: String,
    /// `YYYYMMDD`.
    pub birth_date: String,
    /// `M` or `F`.
    pub sex: String,
    /// First address line.
    pub street: String,
    /// Post town.
    pub city: String,
    /// County.
    pub county: String,
    /// UK postcode.
    pub postcode: String,
    /// Home phone.
    pub phone: String,
    /// The registered GP practice's name.
    pub gp_practice_name: String,
    /// The registered GP practice's ODS code.
    pub gp_practice_ods: String,
}

const FAMILIES: [&str; 10] =
    ["SMITH", "JONES", "TAYLOR", "BROWN", "WILLIAMS", "WILSON", "JOHNSON", "DAVIES", "PATEL", "O'BRIEN"];
const GIVEN_F: [&str; 5] = ["JANE", "SARAH", "EMMA", "PRIYA", "MARGARET"];
const GIVEN_M: [&str; 5] = ["JOHN", "DAVID", "MOHAMMED", "JAMES", "PETER"];
const MIDDLES: [&str; 4] = ["ANNE", "", "LOUISE", "MICHAEL"];
const STREETS: [&str; 6] = [
    "Flat 2, 14 Nantwich Road",
    "27 Victoria Street",
    "3 Church Lane",
    "88 London Road",
    "12 Mill Street",
    "5 The Crescent",
];
const TOWNS: [(&str, &str); 5] =
    [("CREWE", "CW1"), ("NANTWICH", "CW5"), ("NORTHWICH", "CW9"), ("WINSFORD", "CW7"), ("SANDBACH", "CW11")];
const PRACTICES: [(&str, &str); 4] = [
    ("Crewe Health Centre", "N81021"),
    ("Nantwich Surgery", "N81035"),
    ("Northwich Medical Practice", "N81062"),
    ("Sandbach Surgery", "N81084"),
];

impl SyntheticPatient {
    /// The `n`-th synthetic patient: deterministic, distinct NHS numbers for
    /// every `n < 500_000`.
    pub fn nth(n: u32) -> Self {
        let i = n as usize;
        let female = n.is_multiple_of(2);
        let (town, district) = TOWNS[i % TOWNS.len()];
        let (practice, ods) = PRACTICES[i % PRACTICES.len()];
        let letters = b"ABDEFGHJLNPQRSTUWXYZ";
        let postcode = format!(
            "{district} {}{}{}",
            1 + i % 9,
            letters[i % letters.len()] as char,
            letters[(i / 7) % letters.len()] as char
        );
        SyntheticPatient {
            nhs_number: nhs::synthetic(n),
            hospital_number: format!("RBT{:07}", 1_000_000 + n),
            family: FAMILIES[i % FAMILIES.len()].to_owned(),
            given: if female { GIVEN_F[(i / 2) % GIVEN_F.len()] } else { GIVEN_M[(i / 2) % GIVEN_M.len()] }.to_owned(),
            middle: MIDDLES[i % MIDDLES.len()].to_owned(),
            title: if female { "MS" } else { "MR" }.to_owned(),
            birth_date: format!("{:04}{:02}{:02}", 1930 + (n % 90), 1 + (n % 12), 1 + (n % 28)),
            sex: if female { "F" } else { "M" }.to_owned(),
            street: STREETS[i % STREETS.len()].to_owned(),
            city: town.to_owned(),
            county: "CHESHIRE".to_owned(),
            postcode,
            phone: format!("01270 {:06}", 100_000 + (n % 900_000)),
            gp_practice_name: practice.to_owned(),
            gp_practice_ods: ods.to_owned(),
        }
    }

    fn pid(&self) -> String {
        let name =
            format!("{}^{}^{}^^{}^^L", escape(&self.family), escape(&self.given), escape(&self.middle), self.title);
        let address = format!("{}^^{}^{}^{}^GBR^H", escape(&self.street), self.city, self.county, self.postcode);
        segment(
            "PID",
            &[
                (1, "1".to_owned()),
                (3, format!("{}^^^NHS^NH~{}^^^RBT^MR", self.nhs_number, self.hospital_number)),
                (5, name),
                (7, self.birth_date.clone()),
                (8, self.sex.clone()),
                (11, address),
                (13, format!("{}^PRN^PH", self.phone)),
            ],
        )
    }

    fn pd1(&self) -> String {
        format!(
            "PD1|||{}^^{}|G{:07}^DR^A^^^DR",
            escape(&self.gp_practice_name),
            self.gp_practice_ods,
            3_000_000 + self.nhs_number[6..].parse::<u32>().unwrap_or(0)
        )
    }
}

/// A segment with the given (1-based) fields set and the others empty.
fn segment(id: &str, fields: &[(usize, String)]) -> String {
    let last = fields.iter().map(|(n, _)| *n).max().unwrap_or(0);
    let mut values = vec![String::new(); last + 1];
    values[0] = id.to_owned();
    for (n, value) in fields {
        values[*n] = value.clone();
    }
    values.join("|")
}

fn escape(text: &str) -> String {
    crate::message::Delimiters::default().escape(text)
}

/// The ADT events generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdtEvent {
    /// Admit.
    A01,
    /// Discharge.
    A03,
    /// Register (an outpatient attendance).
    A04,
    /// Update patient information.
    A08,
}

impl AdtEvent {
    /// `A01`, `A03`, `A04`, `A08`.
    pub fn trigger(self) -> &'static str {
        match self {
            AdtEvent::A01 => "A01",
            AdtEvent::A03 => "A03",
            AdtEvent::A04 => "A04",
            AdtEvent::A08 => "A08",
        }
    }
}

/// An ADT message (HL7 v2.4, `\r` terminated) for `patient`, with PV1-19
/// `visit_number`, MSH-10 `control_id` and MSH-7/EVN-2 `timestamp`
/// (`YYYYMMDDHHMMSS`). Admission is 08:15 on the timestamp's day; A03 adds
/// the discharge time (the timestamp); A04 is an outpatient attendance.
pub fn adt(
    event: AdtEvent,
    patient: &SyntheticPatient,
    visit_number: &str,
    control_id: &str,
    timestamp: &str,
) -> String {
    let trigger = event.trigger();
    let day = timestamp.get(..8).unwrap_or("20261125");
    let admitted = format!("{day}0815");
    let (class, location, discharge) = match event {
        AdtEvent::A04 => ("O", "OPD^CLINIC 3^^RBT".to_owned(), String::new()),
        AdtEvent::A03 => ("I", "WARD 5^BAY 2^BED 4^RBT".to_owned(), timestamp.to_owned()),
        _ => ("I", "WARD 5^BAY 2^BED 4^RBT".to_owned(), String::new()),
    };
    let structure = match event {
        AdtEvent::A03 => "ADT_A03",
        _ => "ADT_A01",
    };
    format!(
        "MSH|^~\\&|{PAS}|{FACILITY}|ICS|ICS|{timestamp}||ADT^{trigger}^{structure}|{control_id}|P|2.4|||AL|NE|GBR|UNICODE UTF-8\r\
EVN|{trigger}|{timestamp}\r\
{pid}\r\
{pd1}\r\
{pv1}\r",
        pid = patient.pid(),
        pd1 = patient.pd1(),
        pv1 = segment(
            "PV1",
            &[
                (1, "1".to_owned()),
                (2, class.to_owned()),
                (3, location),
                (7, "C4512345^PATEL^ANIL^^^DR^^^GMC".to_owned()),
                (10, "MED".to_owned()),
                (19, format!("{visit_number}^^^RBT^VN")),
                (44, admitted),
                (45, discharge),
            ],
        ),
    )
}

/// One ORU^R01 (HL7 v2.4) for `patient`: a full blood count and a renal
/// profile's eGFR, filler order number `filler_order_number`, results
/// `final`. `visit_number` adds a PV1 (the results then reference the
/// Encounter).
pub fn oru_r01(
    patient: &SyntheticPatient,
    visit_number: Option<&str>,
    filler_order_number: &str,
    control_id: &str,
    timestamp: &str,
) -> String {
    let day = timestamp.get(..8).unwrap_or("20261125");
    let collected = format!("{day}0730");
    let mut msg = format!(
        "MSH|^~\\&|{LIMS}|{FACILITY}|ICS|ICS|{timestamp}||ORU^R01^ORU_R01|{control_id}|P|2.4|||AL|NE|GBR\r\
{pid}\r",
        pid = patient.pid()
    );
    if let Some(visit) = visit_number {
        msg.push_str(&format!("PV1|1|I|WARD 5^BAY 2^BED 4^RBT||||||||||||||||{visit}^^^RBT^VN\r"));
    }
    msg.push_str(&format!(
        "ORC|RE|PLC{filler_order_number}^ICE|{filler_order_number}^RBTLAB\r\
{obr}\r\
OBX|1|NM|718-7^Haemoglobin^LN||131|g/L^g/L^UCUM|115-165|N|||F|||{collected}\r\
OBX|2|NM|6690-2^White cell count^LN||11.8|10\\S\\9/L|4.0-11.0|H|||F|||{collected}\r\
OBX|3|NM|777-3^Platelets^LN||250|10\\S\\9/L|150-400|N|||F|||{collected}\r\
OBX|4|SN|33914-3^eGFR (CKD-EPI)^LN||>^90|mL/min/1.73m2|>60||||F|||{collected}\r\
NTE|1|L|eGFR not adjusted for ethnicity.\r",
        obr = segment(
            "OBR",
            &[
                (1, "1".to_owned()),
                (2, format!("PLC{filler_order_number}^ICE")),
                (3, format!("{filler_order_number}^RBTLAB")),
                (4, "FBC^Full blood count^L".to_owned()),
                (7, collected.clone()),
                (14, collected.clone()),
                (15, "BLD".to_owned()),
                (16, "G3123456^JONES^SARAH^^^DR".to_owned()),
                (22, timestamp.to_owned()),
                (24, "HM".to_owned()),
                (25, "F".to_owned()),
            ],
        ),
    ));
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{self, MapContext};
    use crate::message::Message;

    #[test]
    fn every_generated_message_parses_and_maps() {
        let ctx = MapContext::new("urn:test", "RBT");
        for n in 0..200 {
            let p = SyntheticPatient::nth(n);
            assert!(nhs::is_valid(&p.nhs_number));
            for event in [AdtEvent::A01, AdtEvent::A03, AdtEvent::A04, AdtEvent::A08] {
                let text = adt(event, &p, &format!("V{n:07}"), "C1", "20261125093000");
                let msg = Message::parse(&text).unwrap();
                map::to_bundle(&msg, &ctx).unwrap_or_else(|e| panic!("{e}: {text}"));
            }
            let text = oru_r01(&p, Some("V1"), &format!("L{n:08}"), "C2", "20261125093000");
            map::to_bundle(&Message::parse(&text).unwrap(), &ctx).unwrap();
        }
    }
}
