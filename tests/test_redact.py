"""Credentials in URLs are masked wherever wsm shows a URL, including every error message."""

from wsm import RegistryError
from wsm._redact import redact_url, strip_userinfo, url_username


def test_passwords_and_lone_tokens_are_masked_in_urls_and_text():
    assert redact_url("https://user:PASSWORD@charts.corp/x") == "https://user:***@charts.corp/x"
    assert redact_url("https://TOKEN@github.com/org/charts") == "https://***@github.com/org/charts"
    text = "oci://u:p@ss@reg.corp/charts and http://a:b@c/"
    assert redact_url(text) == "oci://u:***@reg.corp/charts and http://a:***@c/"
    unchanged = "oci://reg.corp/charts/app@sha256:abc, mail ops@corp.example, registry.corp/a@sha256:00"
    assert redact_url(unchanged) == unchanged


def test_userinfo_is_dropped_for_addresses_meant_to_be_used_again():
    assert strip_userinfo("https://user:PASSWORD@charts.corp:8443/x?y") == "https://charts.corp:8443/x?y"
    assert strip_userinfo("https://charts.corp/x") == "https://charts.corp/x"
    assert url_username("https://user:PASSWORD@charts.corp") == "user"
    assert url_username("https://TOKEN@charts.corp") is None


def test_every_error_message_is_masked_once_for_all():
    error = RegistryError("upload to https://user:PASSWORD@charts.corp failed (500)", status=500)
    assert str(error) == error.message == "upload to https://user:***@charts.corp failed (500)"
