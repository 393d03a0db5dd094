#!/usr/bin/env python3
"""Synthetic UK care records for the local data plane (e2e/dataplane).

Builds one FHIR R4 transaction Bundle for the provider tenant of
examples/agreement-cheshire-greater-manchester.yaml (Cheshire and Merseyside,
ODS QYG) and posts it to a record store. Every entry is a conditional create
(`ifNoneExist` on a stable identifier), so loading twice changes nothing.

Contents (all synthetic; NHS numbers are in the 999 range reserved for
testing and carry a valid modulus-11 check digit):
  - 10 patients, each with MedicationStatement, AllergyIntolerance and
    CarePlan (the types the agreement shares) and Condition, Observation and
    Encounter (types it does not share);
  - records labelled in meta.security (system v3 ActCode) with codes for
    categories the agreement excludes (HIV, SEX, STD, and GENDER, the code
    crates/fhir gives GenderIdentity) and one it does not (PSY);
  - objections (Consent, provision.type deny): one for every recipient, one
    naming the consumer organisation only (QOP), one naming another ICB only
    (QE1), and one that was withdrawn (status inactive);
  - a SearchParameter `provision-type` on Consent (not in R4's defaults).

Usage:
  load.py --store http://127.0.0.1:18080/fhir [--out ids.env]   load, write ids
  load.py --bundle                                             print the Bundle
  load.py --check-nhs-numbers                                  list and verify them
Only the Python 3 standard library is used.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
RECORD_ID = "https://e2e.carerecord.dev/Id/record"  # stable key for ifNoneExist
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ACTCODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
UUID_NS = uuid.UUID("6b0a9d3c-5a54-4f7e-9c2a-7d1f0d1e2a10")


def nhs_check_digit(first_nine: str):
    """Modulus 11 check digit of an NHS number, or None when 10 (invalid)."""
    total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1)))
    check = 11 - total % 11
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def valid_nhs_number(n: str) -> bool:
    return len(n) == 10 and n.isdigit() and nhs_check_digit(n[:9]) == int(n[9])


def nhs_numbers(count: int, start: int = 999_000_001):
    """The first `count` valid NHS numbers from `start` (9 digits) upwards."""
    out, stem = [], start
    while len(out) < count:
        check = nhs_check_digit(str(stem))
        if check is not None:
            out.append(f"{stem}{check}")
        stem += 1
    return out


PATIENTS = [
    # key, family, given, gender, birthDate, address line, city, postcode, GP ODS
    ("p01", "Hughes", "Megan", "female", "1958-03-14", "12 Rodney Street", "Liverpool", "L1 9ED", "N82054"),
    ("p02", "Roberts", "Gareth", "male", "1947-11-02", "4 Watergate Row", "Chester", "CH1 2LE", "N81013"),
    ("p03", "Okafor", "Daniel", "male", "1986-07-21", "88 Lark Lane", "Liverpool", "L17 8UU", "N82054"),
    ("p04", "Walsh", "Siobhan", "female", "1993-01-30", "23 Hamilton Square", "Birkenhead", "CH41 6AX", "N81013"),
    ("p05", "Patel", "Priya", "female", "1990-09-09", "7 Bold Street", "Liverpool", "L1 4DJ", "N82054"),
    ("p06", "Jones", "Rhys", "male", "1975-05-17", "31 Lord Street", "Southport", "PR8 1QB", "N81013"),
    ("p07", "Clarke", "Eileen", "female", "1939-12-25", "2 Church Road", "Warrington", "WA1 2TA", "N82054"),
    ("p08", "Nowak", "Tomasz", "male", "1981-04-04", "15 Market Street", "St Helens", "WA10 1NE", "N81013"),
    ("p09", "Brennan", "Aoife", "female", "2001-08-12", "9 Allerton Road", "Liverpool", "L18 1LG", "N82054"),
    ("p10", "Ahmed", "Yusuf", "male", "1968-02-28", "40 Northgate Street", "Chester", "CH1 2HT", "N81013"),
]

ORGANISATIONS = [
    ("QYG", "NHS Cheshire and Merseyside Integrated Care Board"),
    ("N82054", "Riverside Medical Centre"),
    ("N81013", "Park Lane Surgery"),
    ("REM", "Liverpool University Hospitals NHS Foundation Trust"),
]

# (SNOMED code, display) for routine, unlabelled records.
ROUTINE_MEDS = [
    ("319775004", "Aspirin 75mg gastro-resistant tablets"),
    ("318859004", "Amlodipine 5mg tablets"),
    ("325278007", "Metformin 500mg tablets"),
    ("320000009", "Simvastatin 40mg tablets"),
    ("317972000", "Omeprazole 20mg gastro-resistant capsules"),
]
ALLERGIES = [
    ("91936005", "Allergy to penicillin"),
    ("300913006", "Shellfish allergy"),
    ("418689008", "Allergy to grass pollen"),
    ("294505008", "Allergy to amoxicillin"),
]
CONDITIONS = [
    ("38341003", "Hypertensive disorder"),
    ("44054006", "Type 2 diabetes mellitus"),
    ("195967001", "Asthma"),
    ("13645005", "Chronic obstructive lung disease"),
]


def security(*codes):
    display = {
        "HIV": "HIV/AIDS information sensitivity",
        "SEX": "sexuality and reproductive health information sensitivity",
        "STD": "sexually transmitted disease information sensitivity",
        "PSY": "psychiatry disorder information sensitivity",
        # Not in v3 ActCode: the code crates/fhir maps GenderIdentity to.
        "GENDER": "gender identity information sensitivity",
    }
    return {"security": [{"system": ACTCODE, "code": c, "display": display[c]} for c in codes]}


class Builder:
    def __init__(self):
        self.entries = []  # (key, resource)

    @staticmethod
    def urn(key):
        return f"urn:uuid:{uuid.uuid5(UUID_NS, key)}"

    def add(self, key, resource, if_none_exist=None):
        rtype = resource["resourceType"]
        if if_none_exist is None:
            resource.setdefault("identifier", []).append({"system": RECORD_ID, "value": key})
            if_none_exist = f"identifier={RECORD_ID}|{key}"
        self.entries.append(
            (
                key,
                {
                    "fullUrl": self.urn(key),
                    "resource": resource,
                    "request": {"method": "POST", "url": rtype, "ifNoneExist": if_none_exist},
                },
            )
        )

    def bundle(self):
        return {"resourceType": "Bundle", "type": "transaction", "entry": [e for _, e in self.entries]}


def coding(system, code, display):
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def build():
    b = Builder()
    for ods, name in ORGANISATIONS:
        b.add(
            f"org-{ods}",
            {"resourceType": "Organization", "identifier": [{"system": ODS, "value": ods}], "active": True, "name": name},
            if_none_exist=f"identifier={ODS}|{ods}",
        )

    numbers = nhs_numbers(len(PATIENTS))
    for i, (key, family, given, gender, dob, line, city, postcode, gp) in enumerate(PATIENTS):
        nhs = numbers[i]
        b.add(
            key,
            {
                "resourceType": "Patient",
                "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]},
                "identifier": [
                    {
                        "system": NHS_NUMBER,
                        "value": nhs,
                        "extension": [
                            {
                                "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus",
                                "valueCodeableConcept": coding(
                                    "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland",
                                    "01",
                                    "Number present and verified",
                                ),
                            }
                        ],
                    }
                ],
                "name": [{"use": "official", "family": family, "given": [given]}],
                "gender": gender,
                "birthDate": dob,
                "address": [{"use": "home", "line": [line], "city": city, "postalCode": postcode, "country": "GB"}],
                "generalPractitioner": [{"reference": b.urn(f"org-{gp}")}],
                "managingOrganization": {"reference": b.urn("org-QYG")},
            },
            if_none_exist=f"identifier={NHS_NUMBER}|{nhs}",
        )
        subject = {"reference": b.urn(key)}
        n = i + 1
        # Shared types (MedicationStatement, AllergyIntolerance, CarePlan).
        for j in range(2):
            code, display = ROUTINE_MEDS[(i + j) % len(ROUTINE_MEDS)]
            b.add(
                f"{key}-med{j + 1}",
                {
                    "resourceType": "MedicationStatement",
                    "status": "active",
                    "medicationCodeableConcept": coding(SNOMED, code, display),
                    "subject": subject,
                    "effectivePeriod": {"start": f"20{20 + j}-0{1 + n % 9}-15"},
                    "dateAsserted": "2026-10-01T09:00:00Z",
                    "informationSource": {"reference": b.urn(f"org-{gp}")},
                    "dosage": [{"text": "One tablet daily"}],
                },
            )
        code, display = ALLERGIES[i % len(ALLERGIES)]
        b.add(
            f"{key}-allergy1",
            {
                "resourceType": "AllergyIntolerance",
                "clinicalStatus": coding(
                    "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active", "Active"
                ),
                "verificationStatus": coding(
                    "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "confirmed", "Confirmed"
                ),
                "code": coding(SNOMED, code, display),
                "patient": subject,
                "recordedDate": "2024-05-02",
            },
        )
        b.add(
            f"{key}-careplan1",
            {
                "resourceType": "CarePlan",
                "status": "active",
                "intent": "plan",
                "title": "Long term conditions care plan",
                "category": [coding(SNOMED, "734163000", "Care plan")],
                "subject": subject,
                "period": {"start": "2026-01-10"},
            },
        )
        # Types the agreement does not share (Condition, Observation, Encounter).
        code, display = CONDITIONS[i % len(CONDITIONS)]
        b.add(
            f"{key}-condition1",
            {
                "resourceType": "Condition",
                "clinicalStatus": coding(
                    "http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"
                ),
                "code": coding(SNOMED, code, display),
                "subject": subject,
                "onsetDateTime": "2019-06-01",
            },
        )
        b.add(
            f"{key}-obs1",
            {
                "resourceType": "Observation",
                "status": "final",
                "category": [
                    coding("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs", "Vital Signs")
                ],
                "code": coding(LOINC, "8867-4", "Heart rate"),
                "subject": subject,
                "effectiveDateTime": "2026-09-20T10:30:00Z",
                "valueQuantity": {"value": 60 + n, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
            },
        )
        b.add(
            f"{key}-encounter1",
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                    "display": "ambulatory",
                },
                "type": [coding(SNOMED, "185349003", "Encounter for check up")],
                "subject": subject,
                "period": {"start": "2026-09-20T10:00:00Z", "end": "2026-09-20T10:40:00Z"},
                "serviceProvider": {"reference": b.urn(f"org-{gp}")},
            },
        )

    # Records labelled with sensitive categories (v3 ActCode, meta.security).
    labelled = [
        # key, patient, resource
        ("p03-med-hiv", "p03", "MedicationStatement", ("HIV",),
         ("703137005", "Emtricitabine 200mg / tenofovir disoproxil 245mg tablets")),
        ("p04-careplan-sexual-health", "p04", "CarePlan", ("SEX", "STD"), "Sexual health clinic follow-up"),
        ("p02-careplan-gender", "p02", "CarePlan", ("GENDER",), "Gender identity clinic care plan"),
        ("p05-med-contraception", "p05", "MedicationStatement", ("SEX",), ("322810002", "Desogestrel 75microgram tablets")),
        ("p03-condition-hiv", "p03", "Condition", ("HIV",), ("86406008", "Human immunodeficiency virus infection")),
        ("p06-med-psych", "p06", "MedicationStatement", ("PSY",), ("321958004", "Sertraline 50mg tablets")),
    ]
    for key, pkey, rtype, codes, med in labelled:
        subject = {"reference": b.urn(pkey)}
        if rtype == "MedicationStatement":
            r = {
                "resourceType": rtype,
                "meta": security(*codes),
                "status": "active",
                "medicationCodeableConcept": coding(SNOMED, *med),
                "subject": subject,
                "dateAsserted": "2026-10-02T09:00:00Z",
            }
        elif rtype == "CarePlan":
            r = {
                "resourceType": rtype,
                "meta": security(*codes),
                "status": "active",
                "intent": "plan",
                "title": med,
                "subject": subject,
                "period": {"start": "2026-08-01"},
            }
        else:
            r = {
                "resourceType": rtype,
                "meta": security(*codes),
                "clinicalStatus": coding(
                    "http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"
                ),
                "code": coding(SNOMED, *med),
                "subject": subject,
            }
        b.add(key, r)

    # Objections: Consent resources as UK sharing objections are usually
    # recorded (scope patient-privacy, LOINC 59284-0 category, OPTOUT rule).
    def objection(key, pkey, status, recipient_ods=None):
        provision = {"type": "deny", "period": {"start": "2026-06-01"}}
        if recipient_ods:
            provision["actor"] = [
                {
                    "role": coding(
                        "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP", "information recipient"
                    ),
                    "reference": {"identifier": {"system": ODS, "value": recipient_ods}},
                }
            ]
        b.add(
            key,
            {
                "resourceType": "Consent",
                "status": status,
                "scope": coding(
                    "http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy", "Privacy Consent"
                ),
                "category": [coding(LOINC, "59284-0", "Patient Consent")],
                "patient": {"reference": b.urn(pkey)},
                "dateTime": "2026-06-01T12:00:00Z",
                "organization": [{"reference": b.urn("org-QYG")}],
                "policyRule": coding(ACTCODE, "OPTOUT", "opt-out"),
                "provision": provision,
            },
        )

    objection("p07-objection", "p07", "active")  # objects to sharing with anyone
    objection("p08-objection-gm", "p08", "active", "QOP")  # objects to Greater Manchester only
    objection("p09-objection-lsc", "p09", "active", "QE1")  # objects to Lancashire only: GM may see
    objection("p10-objection-withdrawn", "p10", "inactive")  # withdrawn: not in force
    return b


SEARCH_PARAMETER = {
    "resourceType": "SearchParameter",
    "url": "https://e2e.carerecord.dev/SearchParameter/Consent-provision-type",
    "name": "provision-type",
    "status": "active",
    "description": "Consent.provision.type (deny or permit)",
    "code": "provision-type",
    "base": ["Consent"],
    "type": "token",
    "expression": "Consent.provision.type",
}


def request(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    h = {"Accept": "application/fhir+json", "Cache-Control": "no-cache"}
    if data is not None:
        h["Content-Type"] = "application/fhir+json"
    h.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, {"text": text}


def ensure_search_parameter(store):
    sp_url = SEARCH_PARAMETER["url"]
    status, body = request(
        "POST", f"{store}/SearchParameter", SEARCH_PARAMETER, {"If-None-Exist": f"url={sp_url}"}
    )
    if status not in (200, 201):
        sys.exit(f"SearchParameter: HTTP {status}: {json.dumps(body)[:500]}")
    # The registry picks new SearchParameters up asynchronously: wait until the
    # store accepts the parameter, so the Consents below are indexed by it.
    for _ in range(120):
        status, _ = request("GET", f"{store}/Consent?provision-type=deny&_summary=count")
        if status == 200:
            return
        time.sleep(0.5)
    sys.exit("the provision-type SearchParameter never became active")


def load(store, out):
    ensure_search_parameter(store)
    b = build()
    status, body = request("POST", store, b.bundle())
    if status != 200:
        sys.exit(f"transaction: HTTP {status}: {json.dumps(body)[:2000]}")
    ids = {}
    created = 0
    for (key, entry), result in zip(b.entries, body.get("entry", [])):
        location = result["response"].get("location", "")
        rtype = entry["resource"]["resourceType"]
        parts = location.split("/")
        if rtype not in parts:
            sys.exit(f"{key}: unexpected location {location!r}")
        ids[key] = f"{rtype}/{parts[parts.index(rtype) + 1]}"
        if result["response"]["status"].startswith("201"):
            created += 1
    print(f"loaded {len(b.entries)} resources ({created} new) into {store}", file=sys.stderr)

    numbers = {key: n for (key, *_), n in zip(PATIENTS, nhs_numbers(len(PATIENTS)))}
    bare = lambda ref: ref.split("/", 1)[1]  # noqa: E731
    variables = {
        # A MedicationStatement the agreement shares, unlabelled, of a patient who has not objected.
        "ALLOWED_MEDICATION_ID": bare(ids["p01-med1"]),
        "ALLOWED_ALLERGY_ID": bare(ids["p01-allergy1"]),
        "ALLOWED_CAREPLAN_ID": bare(ids["p01-careplan1"]),
        "OTHER_PATIENT_ID": bare(ids["p01"]),
        "OTHER_PATIENT_NHS_NUMBER": numbers["p01"],
        # Shared types labelled with categories the agreement excludes.
        "LABELLED_RESOURCE": ids["p03-med-hiv"],
        "LABELLED_MEDICATION_ID": bare(ids["p03-med-hiv"]),
        "LABELLED_CAREPLAN_ID": bare(ids["p04-careplan-sexual-health"]),
        "LABELLED_SEX_MEDICATION_ID": bare(ids["p05-med-contraception"]),
        "LABELLED_GENDER_CAREPLAN_ID": bare(ids["p02-careplan-gender"]),
        "LABELLED_PATIENT_ID": bare(ids["p03"]),
        # Labelled with a category the agreement does not exclude (PSY): shared.
        "LABELLED_NOT_EXCLUDED_MEDICATION_ID": bare(ids["p06-med-psych"]),
        # A type the agreement does not share.
        "UNSHARED_CONDITION_ID": bare(ids["p01-condition1"]),
        "UNSHARED_OBSERVATION_ID": bare(ids["p01-obs1"]),
        "UNSHARED_ENCOUNTER_ID": bare(ids["p01-encounter1"]),
        # Objections.
        "OBJECTING_PATIENT_ID": bare(ids["p07"]),
        "OBJECTING_PATIENT_NHS_NUMBER": numbers["p07"],
        "OBJECTING_PATIENT_MEDICATION_ID": bare(ids["p07-med1"]),
        "OBJECTION_CONSENT_ID": bare(ids["p07-objection"]),
        "OBJECTING_TO_CONSUMER_PATIENT_ID": bare(ids["p08"]),
        "OBJECTING_TO_OTHER_PATIENT_ID": bare(ids["p09"]),
        "WITHDRAWN_OBJECTION_PATIENT_ID": bare(ids["p10"]),
        "PATIENT_COUNT": str(len(PATIENTS)),
    }
    text = "".join(f"{k}={v}\n" for k, v in variables.items())
    if out:
        with open(out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", help="FHIR base of the record store, e.g. http://127.0.0.1:18080/fhir")
    p.add_argument("--out", help="write KEY=value lines for the interesting ids here (default stdout)")
    p.add_argument("--bundle", action="store_true", help="print the transaction Bundle and exit")
    p.add_argument("--check-nhs-numbers", action="store_true", help="print and verify the NHS numbers")
    a = p.parse_args()
    if a.bundle:
        json.dump(build().bundle(), sys.stdout, indent=1)
        print()
    elif a.check_nhs_numbers:
        for n in nhs_numbers(len(PATIENTS)):
            print(n, "valid" if valid_nhs_number(n) else "INVALID")
            assert valid_nhs_number(n) and n.startswith("999")
        assert not valid_nhs_number("9990000019")  # a wrong check digit is refused
    elif a.store:
        load(a.store.rstrip("/"), a.out)
    else:
        p.error("--store, --bundle or --check-nhs-numbers")


if __name__ == "__main__":
    main()
