"""A stand-in for the tqdm progress bar that records the postfix texts HEAT sets on it."""


class Bar:
    """A progress bar that records its postfix."""

    def __init__(self, *args, **kwargs) -> None:
        self.postfix: list[str] = []

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix.append(text)

    def update(self, k: int = 1) -> None: ...

    def set_description(self, desc: str) -> None: ...

    def close(self) -> None: ...
