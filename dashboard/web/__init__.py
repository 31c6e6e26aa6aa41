"""The HTML dashboard: pages, HTMX partials, login, banners and the read models behind them."""
