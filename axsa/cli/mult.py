"""`axsa mult`: the multiplier library (list, show, table, export, import)."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import emit, json_option, parse_spec_arg


@click.group()
def mult():
    """Multiplier library: families, metrics, product tables, Verilog in and out."""


@mult.command("list")
@click.option("--format", "fmt", default="s8", show_default=True,
              help="Format at which to show the parameter ranges.")
@json_option
def list_(fmt, as_json):
    """Families, their parameters and ranges, and imported multipliers."""
    from axsa.rtl.multipliers import FAMILIES, Format, imported
    f = Format.parse(fmt)
    data = {"format": str(f), "families": [], "imported": imported.entries()}
    for name, cls in FAMILIES.items():
        params = []
        for p in cls.params:
            lo, hi = p.bounds(f)
            default = "/".join(map(str, p.default)) if isinstance(p.default, tuple) else p.default
            params.append({"name": p.name, "min": lo, "max": hi, "default": default,
                           "list": p.is_list, "doc": p.doc})
        data["families"].append({"family": name, "doc": cls.doc, "params": params})

    def human(d):
        click.echo(f"Built-in families (parameter ranges at {d['format']}):")
        for fam in d["families"]:
            click.echo(f"  {fam['family']:10s} {fam['doc']}")
            for p in fam["params"]:
                dflt = "required" if p["default"] is None else f"default {p['default']}"
                kind = "list " if p["list"] else ""
                click.echo(f"      {p['name']}: {kind}{p['min']}..{p['max']} ({dflt}) {p['doc']}")
        if d["imported"]:
            click.echo("Imported (axsa mult import):")
            for e in d["imported"]:
                if e["damaged"]:
                    click.echo(f"  {e['name']}  DAMAGED: {e['damaged']} (remove {e['folder']} "
                               "or re-import it with --force)")
                else:
                    click.echo(f"  {e['name']}@{e['format']}  from {e.get('imported_from')}")
        click.echo("Spec: FAMILY(PARAM=VALUE,...)@FORMAT, FORMAT s8 / u4 / s8x4; "
                   "e.g. 'drum(k=4)@u8'")
    emit(data, as_json, human)


mode_option = click.option("--mode", type=int, default=0, show_default=True,
                           help="Mode of a mode-configurable multiplier.")


@mult.command()
@click.argument("spec")
@mode_option
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Write an error heat map and histogram (PNG).")
@json_option
def show(spec, mode, plot, as_json):
    """Error metrics of SPEC, from its product table read off the netlist."""
    from axsa.rtl.multipliers import exact_table
    from axsa.synth.metrics import error_metrics
    from axsa.synth.netlist import product_table
    m = parse_spec_arg(spec)
    table = product_table(m, mode)
    data = {"spec": m.spec, "mode": mode, "modes": m.modes,
            "product_bits": m.p_shape.width, "signed": m.fmt.signed}
    data |= error_metrics(table, exact_table(m.fmt))
    if plot:
        from axsa.synth.plots import error_map
        error_map(m, table, plot, mode)
        data["plot"] = str(plot)

    def human(d):
        click.echo(f"{d['spec']}" + (f" mode {d['mode']} of {d['modes']}" if d["modes"] > 1 else "")
                   + f": {d['product_bits']}-bit product")
        for key, label in (("mae", "mean |error|"), ("nmed", "normalised mean error distance"),
                           ("mred", "mean relative error distance"), ("wce", "worst-case error"),
                           ("wcre", "worst-case relative error"), ("ep", "error probability"),
                           ("mse", "mean squared error"), ("bias", "mean signed error")):
            click.echo(f"  {key:5s} {d[key]:14.6g}   {label}")
        if d.get("plot"):
            click.echo(f"plot written to {d['plot']}")
    emit(data, as_json, human)


@mult.command()
@click.argument("spec")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Output .npy: int64 lut[a_code, b_code].")
@mode_option
@json_option
def table(spec, out, mode, as_json):
    """Write the product table of SPEC (read off its synthesized netlist)."""
    import numpy as np

    from axsa.synth.netlist import product_table
    m = parse_spec_arg(spec)
    t = product_table(m, mode)
    np.save(out, t)
    data = {"spec": m.spec, "mode": mode, "out": str(out), "shape": list(t.shape),
            "dtype": str(t.dtype), "min": int(t.min()), "max": int(t.max())}
    emit(data, as_json, lambda d: click.echo(
        f"{d['spec']}: table {d['shape'][0]}x{d['shape'][1]} int64 "
        f"(products {d['min']}..{d['max']}) -> {d['out']}"))


def _module_name(spec: str) -> str:
    import re
    return "axsa_" + re.sub(r"[^A-Za-z0-9]+", "_", spec).strip("_")


@mult.command()
@click.argument("spec")
@click.option("--verilog", "out", required=True, type=click.Path(dir_okay=False),
              help="Output Verilog file.")
@click.option("--top", help="Module name (default: derived from the spec).")
@json_option
def export(spec, out, top, as_json):
    """Write SPEC as a combinational Verilog module (ports a, b, p and mode)."""
    from amaranth.back import verilog

    from axsa import toolchain
    from axsa.errors import InputError
    from axsa.rtl.multipliers.imported import IDENTIFIER
    m = parse_spec_arg(spec)
    top = top or _module_name(m.spec)
    if not IDENTIFIER.fullmatch(top):
        raise InputError(f"--top {top!r} is not a Verilog module name (a letter or '_', "
                         "then letters, digits, '_' or '$')")
    toolchain.configure()
    text = verilog.convert(m.elaboratable(), name=top)
    for src in getattr(m, "verilog_sources", []):
        text += "\n" + Path(src).read_text(encoding="utf-8")
    Path(out).write_text(text)
    ports = {"a": m.fmt.a_width, "b": m.fmt.b_width, "p": m.p_shape.width}
    if m.modes > 1:
        ports["mode"] = (m.modes - 1).bit_length()
    data = {"spec": m.spec, "top": top, "verilog": str(out), "ports": ports}
    emit(data, as_json, lambda d: click.echo(
        f"{d['spec']} -> module {d['top']} in {d['verilog']} (ports "
        + ", ".join(f"{k}[{v}]" for k, v in d["ports"].items()) + ")"))


@mult.command("import")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("--top", required=True, help="Module to import; also its spec family name.")
@click.option("--format", "fmt", required=True, help="Operand format, e.g. s8, u4, s8x4.")
@click.option("--a", "port_a", default="a", show_default=True, help="Port of operand a.")
@click.option("--b", "port_b", default="b", show_default=True, help="Port of operand b.")
@click.option("--y", "port_y", default="y", show_default=True, help="Port of the product.")
@click.option("--force", is_flag=True, help="Replace an entry of the same name.")
@json_option
def import_(source, top, fmt, port_a, port_b, port_y, force, as_json):
    """Add a combinational Verilog multiplier to the user library as spec TOP@FORMAT."""
    from axsa.rtl.multipliers import exact_table
    from axsa.synth.importer import import_verilog
    from axsa.synth.metrics import error_metrics
    m = import_verilog(source, top, fmt, port_a, port_b, port_y, force=force)
    metrics = error_metrics(m.model_table(), exact_table(m.fmt))
    data = {"spec": m.spec, "library": str(m.folder), "exact": m.is_exact} | metrics
    emit(data, as_json, lambda d: click.echo(
        f"imported {d['spec']} into {d['library']}"
        + (" (exact)" if d["exact"] else f" (mae {d['mae']:.4g}, mred {d['mred']:.4g})")))
