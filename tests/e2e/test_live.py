"""`validate --live` and `mapping init` against the sandbox CRMs, through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.mapping import read_mapping
from tests.e2e.conftest import Crms, run_cli


def test_validate_live_lists_an_unmapped_picklist_value(crms: Crms) -> None:
    sf, hs, config = crms
    code, out = run_cli(config, "validate", "--live")
    assert code == 0, out
    assert "sfdc Lead.Status: every active value is mapped" in out
    assert "hubspot contacts.hs_lead_status: every active value is mapped" in out
    sf.add_picklist_value("Lead", "Status", "Nurturing")
    hs.add_option("contacts", "hs_lead_status", "RECYCLED")
    code, out = run_cli(config, "validate", "--live")
    assert code == 2
    assert "salesforce-lead.yaml: sfdc Lead.Status: 1 active picklist value(s) not in the mapping: 'Nurturing'" in out
    assert "hubspot contacts.hs_lead_status: 1 active picklist value(s) not in the mapping: 'RECYCLED'" in out


def test_mapping_init_writes_a_valid_mapping_in_the_crms_order(crms: Crms, tmp_path: Path) -> None:
    _, _, config = crms
    out = tmp_path / "lead.yaml"
    code, text = run_cli(config, "mapping", "init", "sfdc", "Lead", "--field", "Status", "--out", str(out))
    assert code == 0, text
    mapping, problems = read_mapping(out)
    assert mapping is not None and not problems
    assert mapping.statuses == (
        "Open - Not Contacted",
        "Working - Contacted",
        "Closed - Converted",
        "Closed - Not Converted",
    )
    # LeadStatus.IsConverted marks the converted status as a success; "Not Converted" reads as a loss.
    assert [s.category.value for s in mapping.stages] == ["in_progress", "in_progress", "succeeded", "not_succeeded"]
    assert (
        run_cli(config, "mapping", "init", "sfdc", "Lead", "--field", "Status", "--out", str(out))[0] == 2
    )  # no overwrite
    code, text = run_cli(config, "mapping", "init", "hubspot", "contacts", "--field", "lifecyclestage")
    assert code == 0 and '"marketingqualifiedlead":' in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("sfdc", "Lead", "--field", "Nope"), "sfdc Lead has no field 'Nope'"),
        (("sfdc", "Lead", "--field", "Company"), "sfdc Lead.Company is a string field, not a picklist"),
        (("sfcd", "Lead", "--field", "Status"), "unknown source 'sfcd' (did you mean 'sfdc'?)"),
    ],
)
def test_mapping_init_refuses_what_is_not_a_picklist(crms: Crms, args: tuple[str, ...], message: str) -> None:
    code, out = run_cli(crms[2], "mapping", "init", *args)
    assert code == 2 and message in out
