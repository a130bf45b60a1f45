"""Two ``daifuku serve`` processes on one PostgreSQL database, each reading from its views with
its projection in the background: a read in one, right after a write acknowledged by the other,
always shows the write (PROGRAM.md, Reads see every acknowledged write)."""

from __future__ import annotations

from typing import Any

from tests.e2e.test_revocation_processes import call, serving


def test_a_read_in_one_process_right_after_a_write_in_another_shows_it(
    postgres_url: str,
) -> None:
    with (
        serving(postgres_url, "views") as (writer, printed),
        serving(postgres_url, "views") as (reader, _),
    ):
        (key,) = [line.split()[-1] for line in printed if line.split()[0] == "storefront"]

        def write(path: str, body: dict[str, Any]) -> None:
            status, answer = call(f"{writer}{path}", key, "POST", body)
            assert status == 201, answer

        def read(path: str) -> Any:
            status, answer = call(f"{reader}{path}", key)
            assert status == 200, answer
            return answer

        for n in range(15):
            member = f"m{n}"
            write("/v1/members", {"member_id": member, "email": f"{member}@example.com"})
            assert read(f"/v1/members/{member}")["member_id"] == member
            for k in range(3):
                order = f"{member}-o{k}"
                body = {"order_id": order, "member_id": member, "amount": "10.00"}
                write("/v1/purchases", {**body, "currency": "USD"})
                assert read(f"/v1/members/{member}")["points"]["pending"] == 10 * (k + 1)
                assert read(f"/v1/purchases/{order}")["points_awarded"] == 10
            write(f"/v1/purchases/{member}-o0/refunds", {"refund_id": f"{member}-r"})
            assert read(f"/v1/members/{member}")["points"]["pending"] == 20
            assert read(f"/v1/purchases/{member}-o0")["refunded_amount"] == "10.00"
