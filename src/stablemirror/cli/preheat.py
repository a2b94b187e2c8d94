"""Command line: `stablemirror preheat HOST/REPO:TAG --nodes ...`: warm node caches."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from stablemirror.client.preheat import Warmed, preheat, select_nodes
from stablemirror.client.reference import parse_image_reference


def _nodes(selector: str) -> list[str]:
    if selector.startswith("@"):
        lines = Path(selector[1:]).read_text().splitlines()
        return [n.strip() for n in lines if n.strip() and not n.startswith("#")]
    return [n.strip() for n in selector.split(",") if n.strip()]


def preheat_command(
    image: Annotated[str, typer.Argument(
        help="HOST/REPO[:TAG|@DIGEST]; REPO as the node caches serve it")],
    nodes: Annotated[str, typer.Option(
        help="node caches: HOST:PORT[,HOST:PORT...] or @FILE (one per line)")],
    percentage: Annotated[float | None, typer.Option(
        help="warm only this share of the nodes (the same ones for the same image)")] = None,
    insecure: Annotated[bool, typer.Option(help="plain HTTP to the nodes")] = True,
) -> None:
    """Warm node caches with an image before a rollout (docs/p2p.md, "Preheat")."""
    if warm_nodes(image, nodes, percentage, insecure):
        raise typer.Exit(2)


def warm_nodes(image: str, nodes: str, percentage: float | None, insecure: bool) -> int:
    """Preheat and print a line per node; the number of nodes that failed (also used by
    `release promote --preheat`)."""
    ref = parse_image_reference(image)
    chosen = select_nodes(_nodes(nodes), str(ref), percentage)
    if not chosen:
        raise typer.BadParameter("no node selected", param_hint="--nodes")
    results = asyncio.run(preheat(chosen, ref, insecure))
    console = Console()
    failed = 0
    for node, result in zip(chosen, results, strict=True):
        if isinstance(result, Warmed):
            console.print(f"{node}: {result.manifests} manifest(s), {result.blobs} blob(s), "
                          f"{result.bytes} bytes")
        else:
            failed += 1
            console.print(f"{node}: failed: {type(result).__name__}: {result}")
    return failed
