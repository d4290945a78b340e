"""Decode a cached Resource back to a dict, to compare translation output with what Envoy should receive."""

from google.protobuf import json_format

from envoy_control_plane.xds.resource import Resource


def as_dict(resource: Resource) -> dict:
    body = json_format.MessageToDict(resource.to_any())
    body.pop("@type")
    return body
