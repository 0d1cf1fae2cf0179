"""How a cart is priced: unit prices and tax rates from the catalogue, flat shipping."""

from __future__ import annotations

from dataclasses import dataclass

from .contracts import Cart, Quote, QuoteLine, UnknownSku

SHIPPING_CENTS = 490
FREE_SHIPPING_FROM_CENTS = 5_000  # subtotal before tax


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    unit_price_cents: int
    tax_rate_bp: int  # basis points: 2000 = 20 %


def quote_cart(cart: Cart, catalogue: dict[str, Product]) -> Quote:
    """Price ``cart``; UnknownSku names every SKU the catalogue lacks."""
    unknown = sorted({line.sku for line in cart.lines} - catalogue.keys())
    if unknown:
        raise UnknownSku(f"unknown SKU: {', '.join(unknown)}")
    lines = []
    for line in cart.lines:
        product = catalogue[line.sku]
        net = product.unit_price_cents * line.quantity
        # Half-up rounding per line, as a till does.
        tax = (net * product.tax_rate_bp + 5_000) // 10_000
        lines.append(
            QuoteLine(
                sku=product.sku,
                name=product.name,
                quantity=line.quantity,
                unit_price_cents=product.unit_price_cents,
                tax_cents=tax,
                line_total_cents=net + tax,
            )
        )
    subtotal = sum(line.unit_price_cents * line.quantity for line in lines)
    tax = sum(line.tax_cents for line in lines)
    shipping = 0 if subtotal >= FREE_SHIPPING_FROM_CENTS else SHIPPING_CENTS
    return Quote(
        lines=lines,
        subtotal_cents=subtotal,
        tax_cents=tax,
        shipping_cents=shipping,
        total_cents=subtotal + tax + shipping,
    )
