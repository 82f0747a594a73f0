"""The few SOAP API calls the destination makes (Marketing Cloud's REST API can neither delete data
extension rows nor list a data extension's fields): `Delete` of `DataExtensionObject`s by their
primary key and `Retrieve` of a data extension's `DataExtensionField`s, in SOAP 1.1 envelopes
authenticated with the REST token in a `fueloauth` header (the SOAP API Developer Guide's
"Delete a Row from a Data Extension" and "Retrieve Data Extension Fields" envelopes).

Built and read with the standard library's ElementTree: two request shapes do not justify a SOAP
toolkit, and the WSDL such a toolkit needs is fetched from Marketing Cloud at run time.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
ADDRESSING = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
FUEL = "http://exacttarget.com"
PARTNER = "http://exacttarget.com/wsdl/partnerAPI"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
FIELD_PROPERTIES = ("Name", "FieldType", "IsPrimaryKey", "IsRequired", "MaxLength")


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, _q(PARTNER, tag), attrs)
    if text is not None:
        el.text = text
    return el


def envelope(action: str, url: str, token: str, request: ET.Element) -> bytes:
    """A SOAP 1.1 envelope of `request` with the WS-Addressing action and the OAuth token."""
    env = ET.Element(_q(SOAP_ENV, "Envelope"))
    header = ET.SubElement(env, _q(SOAP_ENV, "Header"))
    ET.SubElement(header, _q(ADDRESSING, "Action")).text = action
    ET.SubElement(header, _q(ADDRESSING, "To")).text = url
    ET.SubElement(header, _q(FUEL, "fueloauth")).text = token
    ET.SubElement(env, _q(SOAP_ENV, "Body")).append(request)
    out: bytes = ET.tostring(env, encoding="utf-8", xml_declaration=True)
    return out


def delete_request(customer_key: str, rows: Sequence[Sequence[tuple[str, str]]]) -> ET.Element:
    """`DeleteRequest` of one `DataExtensionObject` per row, named by its primary key's
    (field, value) pairs."""
    request = ET.Element(_q(PARTNER, "DeleteRequest"))
    _sub(request, "Options")
    for keys in rows:
        obj = _sub(request, "Objects", **{_q(XSI, "type"): "DataExtensionObject"})
        _sub(obj, "CustomerKey", customer_key)
        holder = _sub(obj, "Keys")
        for name, value in keys:
            key = _sub(holder, "Key")
            _sub(key, "Name", name)
            _sub(key, "Value", value)
    return request


def retrieve_fields_request(customer_key: str) -> ET.Element:
    """`RetrieveRequestMsg` of the fields of the data extension whose external key is given."""
    msg = ET.Element(_q(PARTNER, "RetrieveRequestMsg"))
    request = _sub(msg, "RetrieveRequest")
    _sub(request, "ObjectType", "DataExtensionField")
    for prop in FIELD_PROPERTIES:
        _sub(request, "Properties", prop)
    flt = _sub(request, "Filter", **{_q(XSI, "type"): "SimpleFilterPart"})
    _sub(flt, "Property", "DataExtension.CustomerKey")
    _sub(flt, "SimpleOperator", "equals")
    _sub(flt, "Value", customer_key)
    return msg


class NotSoap(ValueError):
    """The answer is not a SOAP envelope."""


@dataclass(frozen=True)
class Fault:
    code: str
    """`faultcode` without its prefix: Security, Client or Server."""
    message: str


def body(text: bytes) -> ET.Element:
    """The first element in the envelope's Body; NotSoap when there is none."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise NotSoap(f"not XML ({exc})") from None
    found = root.find(_q(SOAP_ENV, "Body"))
    if found is None or len(found) == 0:
        raise NotSoap("no SOAP Body")
    return found[0]


def fault(el: ET.Element) -> Fault | None:
    if el.tag != _q(SOAP_ENV, "Fault"):
        return None
    code = (el.findtext("faultcode") or "").rpartition(":")[2]
    return Fault(code, (el.findtext("faultstring") or "").strip())


def _text(el: ET.Element, tag: str) -> str:
    return (el.findtext(_q(PARTNER, tag)) or "").strip()


def overall_status(el: ET.Element) -> str:
    return _text(el, "OverallStatus")


@dataclass(frozen=True)
class DeleteResult:
    ordinal: int | None
    status: str
    message: str


def delete_results(el: ET.Element) -> list[DeleteResult]:
    """A `DeleteResponse`'s results: each object's status and Marketing Cloud's own message (its
    `ErrorMessage` and key errors where it gives them, else its `StatusMessage`)."""
    out = []
    for res in el.findall(_q(PARTNER, "Results")):
        ordinal = _text(res, "OrdinalID")
        parts = [_text(res, "ErrorMessage")]
        for err in res.iter(_q(PARTNER, "KeyError")):
            parts.append(" ".join(t.strip() for t in err.itertext() if t.strip()))
        message = "; ".join(p for p in parts if p) or _text(res, "StatusMessage")
        code = _text(res, "ErrorCode")
        out.append(
            DeleteResult(
                int(ordinal) if ordinal.isdigit() else None,
                _text(res, "StatusCode"),
                f"{code}: {message}" if code and message else message,
            )
        )
    return out


def field_results(el: ET.Element) -> list[dict[str, Any]]:
    """A `RetrieveResponseMsg`'s `DataExtensionField`s: name, type, primary key, required."""
    return [
        {
            "Name": _text(res, "Name"),
            "FieldType": _text(res, "FieldType"),
            "IsPrimaryKey": _text(res, "IsPrimaryKey").lower() == "true",
            "IsRequired": _text(res, "IsRequired").lower() == "true",
        }
        for res in el.findall(_q(PARTNER, "Results"))
    ]


def status_message(el: ET.Element) -> str:
    """A response's `StatusMessage` (why a Retrieve's OverallStatus is not OK)."""
    return overall_status(el) + (f" ({msg})" if (msg := _text(el, "StatusMessage")) else "")
