"""Writes the issue-12 fixture messages into tests/fixtures/mail/ (forwards, TNEF, charsets); run once, by hand.

The shapes follow the public descriptions of each client's output (Gmail's, Outlook's, Apple
Mail's and Thunderbird's forward headers; MS-OXTNEF for winmail.dat; RFC 2045/2047 for charsets).
Every message is from an MPOC of examples/directory.toml, so each opens a case.
"""

from __future__ import annotations

import base64
import struct
import sys
from pathlib import Path

MAIL = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "mail"
DATE = "Wed, 25 Nov 2026 15:40:00 -0700"
PAT = "Pat Doe <pat@acme.example>"
JOAO = "=?utf-8?q?Jo=C3=A3o_Silva?= <joao@brisa.example.com.br>"

CARRIER = (
    "Your port request PON-7781 for +1 303 555 0100 was rejected by the losing carrier.\n"
    "Reason: the account number on the request does not match the account of record.\n"
    "Correct the account number and resubmit within 5 business days."
)


def head(name: str, subject: str, *, sender: str = PAT, extra: str = "") -> str:
    return (
        f"From: {sender}\nTo: support@support.example.com\nSubject: {subject}\nDate: {DATE}\n"
        f"Message-ID: <{name}@fixtures.example>\nMIME-Version: 1.0\n{extra}"
    )


def plain(text: str, charset: str = "utf-8", cte: str = "8bit") -> str:
    return f"Content-Type: text/plain; charset=\"{charset}\"\nContent-Transfer-Encoding: {cte}\n\n{text}\n"


def write(name: str, data: str | bytes) -> None:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    (MAIL / name).write_bytes(raw)


def forwards() -> None:
    write("forward_gmail_inline_carrier_rejection.eml", head("fwd-gmail", "Fwd: Port request rejected") +
          'Content-Type: multipart/alternative; boundary="000000000000a1b2"\n\n--000000000000a1b2\n' +
          plain("See below, please help.\n\n---------- Forwarded message ---------\n"
                "From: Carrier NOC <noc@carrier.example>\nDate: Tue, Nov 24, 2026 at 9:12 AM\n"
                "Subject: Port request rejected\nTo: <pat@acme.example>\n\n\n" + CARRIER) +
          '\n--000000000000a1b2\nContent-Type: text/html; charset="UTF-8"\n\n'
          '<div dir="ltr">See below, please help.<br><br><div class="gmail_quote"><div class="gmail_attr">'
          '---------- Forwarded message ---------<br>From: <b>Carrier NOC</b> &lt;noc@carrier.example&gt;<br>'
          'Date: Tue, Nov 24, 2026 at 9:12 AM<br>Subject: Port request rejected<br>To: &lt;pat@acme.example&gt;'
          '<br></div><br><br>' + CARRIER.replace("\n", "<br>") + '</div></div>\n--000000000000a1b2--\n')
    write("forward_outlook_desktop_inline.eml", head("fwd-outlook", "FW: Port request rejected") +
          plain("See below, please help.\n\nPat\n\n________________________________\n"
                "From: Carrier NOC <noc@carrier.example>\nSent: Tuesday, November 24, 2026 9:12 AM\n"
                "To: Pat Doe <pat@acme.example>\nSubject: Port request rejected\n\n" + CARRIER, "us-ascii", "7bit"))
    write("forward_outlook_original_message.eml", head("fwd-outlook-original", "FW: Port request rejected") +
          plain("Please help with the rejection below.\n\n-----Original Message-----\n"
                "From: Carrier NOC <noc@carrier.example>\nSent: Tuesday, November 24, 2026 9:12 AM\n"
                "To: Pat Doe <pat@acme.example>\nSubject: Port request rejected\n\n" + CARRIER, "us-ascii", "7bit"))
    write("forward_outlook_web_html_only.eml", head("fwd-owa", "FW: Port request rejected") +
          'Content-Type: text/html; charset="utf-8"\nContent-Transfer-Encoding: quoted-printable\n\n'
          '<html><head><style>p{margin:0}</style></head><body><div>See below, please help.</div>'
          '<div><br></div><hr style=3D"display:inline-block;width:98%"><div id=3D"divRplyFwdMsg">'
          '<b>From:</b> Carrier NOC &lt;noc@carrier.example&gt;<br><b>Sent:</b> Tuesday, November 24, 2026 9:12 AM<br>'
          '<b>To:</b> Pat Doe &lt;pat@acme.example&gt;<br><b>Subject:</b> Port request rejected</div><div><br></div>'
          '<div>' + CARRIER.replace("\n", "<br>") + '</div></body></html>\n')
    write("forward_apple_mail_begin_forwarded.eml", head("fwd-apple", "Fwd: Port request rejected") +
          plain("See below, please help.\n\nBegin forwarded message:\n\n"
                "From: Carrier NOC <noc@carrier.example>\nSubject: Port request rejected\n"
                "Date: 24 November 2026 at 09:12:00 MST\nTo: pat@acme.example\n\n" + CARRIER, "us-ascii", "7bit"))
    write("forward_thunderbird_inline.eml", head("fwd-thunderbird", "Fwd: Port request rejected") +
          plain("See below, please help.\n\n\n-------- Forwarded Message --------\n"
                "Subject: \tPort request rejected\nDate: \tTue, 24 Nov 2026 09:12:00 -0700\n"
                "From: \tCarrier NOC <noc@carrier.example>\nTo: \tpat@acme.example\n\n" + CARRIER, "us-ascii", "7bit"))
    recusa = ("Sua solicitação de portabilidade PON-7781 foi recusada pela operadora doadora.\n"
              "Motivo: o número da conta não confere com o cadastro.")
    write("forward_gmail_pt_mensagem_encaminhada.eml",
          head("fwd-gmail-pt", "Fwd: Portabilidade recusada", sender=JOAO) +
          plain("Segue abaixo, por favor ajudem.\n\n---------- Mensagem encaminhada ---------\n"
                "De: Operadora NOC <noc@operadora.example>\nData: ter., 24 de nov. de 2026 às 09:12\n"
                "Assunto: Portabilidade recusada\nPara: <joao@brisa.example.com.br>\n\n\n" + recusa))
    write("forward_outlook_pt_mensagem_original.eml",
          head("fwd-outlook-pt", "ENC: Portabilidade recusada", sender=JOAO) +
          plain("Vejam a recusa abaixo, por favor.\n\n-----Mensagem original-----\n"
                "De: Operadora NOC <noc@operadora.example>\nEnviada em: terça-feira, 24 de novembro de 2026 09:12\n"
                "Para: João Silva <joao@brisa.example.com.br>\nAssunto: Portabilidade recusada\n\n" + recusa))
    inner = ("From: Carrier NOC <noc@carrier.example>\nTo: Pat Doe <pat@acme.example>\n"
             "Subject: Port request rejected\nDate: Tue, 24 Nov 2026 09:12:00 -0700\n"
             "Message-ID: <pon-7781@carrier.example>\nMIME-Version: 1.0\n"
             "Content-Type: text/plain; charset=\"us-ascii\"\n\n" + CARRIER + "\n")
    write("forward_outlook_as_attachment.eml", head("fwd-outlook-attached", "FW: Port request rejected") +
          'Content-Type: multipart/mixed; boundary="_002_outlook_"\n\n--_002_outlook_\n' +
          plain("See the attached rejection, please help.", "us-ascii", "7bit") +
          '\n--_002_outlook_\nContent-Type: message/rfc822\n'
          'Content-Disposition: attachment; filename="Port request rejected.eml"\n\n' + inner +
          "\n--_002_outlook_--\n")
    write("forward_thunderbird_as_attachment.eml", head("fwd-thunderbird-attached", "Fwd: Port request rejected") +
          'Content-Type: multipart/mixed; boundary="------------tb0123"\n\nThis is a multi-part message in MIME format.\n'
          '--------------tb0123\n' + plain("Forwarding the carrier's mail as an attachment.", "UTF-8", "7bit") +
          '\n--------------tb0123\nContent-Type: message/rfc822; name="Port request rejected.eml"\n'
          'Content-Disposition: attachment; filename="Port request rejected.eml"\n\n' + inner +
          "\n--------------tb0123--\n")
    write("reply_with_forward_inside.eml", head(
        "reply-fwd-inside", "Re: [Case #00009999] Received: Port request",
        extra="In-Reply-To: <mc.0000unknown@mailcase.localhost>\n") +
          plain("Here is what the carrier sent us this morning.\n\n---------- Forwarded message ---------\n"
                "From: Carrier NOC <noc@carrier.example>\nDate: Tue, Nov 24, 2026 at 9:12 AM\n"
                "Subject: Port request rejected\nTo: <pat@acme.example>\n\n" + CARRIER, "us-ascii", "7bit"))


def _tnef_attr(level: int, attr_id: int, data: bytes) -> bytes:
    return struct.pack("<BII", level, attr_id, len(data)) + data + struct.pack("<H", sum(data) & 0xFFFF)


def tnef(files: list[tuple[str, bytes]]) -> bytes:
    """A minimal winmail.dat (MS-OXTNEF §2.1): signature, key, message attributes, then per
    attachment attAttachRendData, attAttachTitle and attAttachData."""
    out = struct.pack("<IH", 0x223E9F78, 0x0001)
    out += _tnef_attr(1, 0x00089006, struct.pack("<I", 0x00010000))  # attTnefVersion
    out += _tnef_attr(1, 0x00069007, struct.pack("<II", 1252, 0))  # attOemCodepage
    out += _tnef_attr(1, 0x00078008, b"IPM.Microsoft Mail.Note\x00")  # attMessageClass
    for name, data in files:
        out += _tnef_attr(2, 0x00069002, struct.pack("<HIIIH", 1, 0xFFFFFFFF, 0, 0, 0)[:14])
        out += _tnef_attr(2, 0x00018010, name.encode("cp1252") + b"\x00")
        out += _tnef_attr(2, 0x0006800F, data)
    return out


def attachments() -> None:
    config = b"hostname core-1\ninterface Gi0/1\n ip address 10.0.0.1 255.255.255.0\n"
    pcap = b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00" + bytes(range(48))
    blob = base64.encodebytes(tnef([("sip-trace.pcap", pcap), ("router-config.txt", config)])).decode()
    write("tnef_winmail_with_trace_and_config.eml", head("tnef-real", "SIP trunk flaps every 10 minutes") +
          'Content-Type: multipart/mixed; boundary="_003_tnef_"\n\n--_003_tnef_\n' +
          plain("The trunk flaps every 10 minutes. The trace and the router config are attached.", "us-ascii", "7bit") +
          '\n--_003_tnef_\nContent-Type: application/ms-tnef; name="winmail.dat"\n'
          'Content-Disposition: attachment; filename="winmail.dat"\nContent-Transfer-Encoding: base64\n\n' +
          blob + "\n--_003_tnef_--\n")
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    log = "\n".join(f"2026-11-25T15:{m:02d}:00 trunk-1 OPTIONS timeout" for m in range(30)).encode()
    write("attachments_pdf_and_log.eml", head("attach-pdf-log", "Invoice dispute and the outage log") +
          'Content-Type: multipart/mixed; boundary="mixed42"\n\n--mixed42\n' +
          plain("The invoice and the log of the outage are attached.", "us-ascii", "7bit") +
          '\n--mixed42\nContent-Type: application/pdf; name="invoice-2026-11.pdf"\n'
          'Content-Disposition: attachment; filename="invoice-2026-11.pdf"\nContent-Transfer-Encoding: base64\n\n' +
          base64.encodebytes(pdf).decode() +
          '\n--mixed42\nContent-Type: text/plain; charset=us-ascii; name="trunk.log"\n'
          'Content-Disposition: attachment; filename="trunk.log"\nContent-Transfer-Encoding: base64\n\n' +
          base64.encodebytes(log).decode() + "\n--mixed42--\n")


CHARSETS = [
    # (file stem, MIME label, Python codec, transfer encoding, subject, body)
    ("iso_2022_jp", "iso-2022-jp", "iso2022_jp", "7bit", "電話がつながりません",
     "本日の朝から、東京オフィスの電話がつながりません。至急確認してください。"),
    ("shift_jis", "shift_jis", "cp932", "8bit", "大阪オフィスの回線障害",
     "大阪オフィスの回線が午前九時から停止しています。"),
    ("euc_jp", "euc-jp", "euc_jp", "8bit", "請求書の確認", "今月の請求書に誤りがあります。ご確認ください。"),
    ("euc_kr", "euc-kr", "cp949", "8bit", "전화 연결 불가", "오늘 아침부터 서울 사무실 전화가 연결되지 않습니다."),
    ("gb2312", "gb2312", "gb2312", "base64", "电话无法接通", "从今天早上开始，北京办公室的电话无法接通。"),
    ("gbk", "gbk", "gbk", "8bit", "线路故障：朱镕基路机房", "朱镕基路机房的线路从昨晚开始中断。"),
    ("gb18030", "gb18030", "gb18030", "base64", "费用争议 €120", "十一月的账单多收了 €120 的服务费。"),
    ("big5", "big5", "big5", "8bit", "電話無法接通", "從今天早上開始，台北辦公室的電話無法接通。"),
    ("koi8_r", "koi8-r", "koi8_r", "8bit", "Телефоны не работают", "С утра в московском офисе не работают телефоны."),
    ("windows_1251", "windows-1251", "cp1251", "quoted-printable", "Няма връзка с офиса",
     "От сутринта няма телефонна връзка с офиса в София."),
    ("windows_1250", "windows-1250", "cp1250", "8bit", "Telefony nefungují",
     "Od rána nefungují telefony v pražské kanceláři."),
    ("windows_1253", "windows-1253", "cp1253", "8bit", "Τα τηλέφωνα δεν λειτουργούν",
     "Από το πρωί τα τηλέφωνα στο γραφείο της Αθήνας δεν λειτουργούν."),
    ("iso_8859_2", "iso-8859-2", "iso8859_2", "quoted-printable", "Telefony nie działają",
     "Od rana telefony w biurze w Łodzi nie działają."),
    ("iso_8859_15", "iso-8859-15", "iso8859_15", "8bit", "Facture de 120 € à vérifier",
     "La facture de novembre indique 120 € de frais de main-d'œuvre."),
    ("utf_7", "utf-7", "utf_7", "7bit", "Téléphones coupés à Montréal",
     "Les téléphones du bureau de Montréal sont coupés depuis ce matin."),
]


def _qp(data: bytes) -> str:
    import quopri

    return quopri.encodestring(data).decode("ascii")


def _body(data: bytes, cte: str) -> str | bytes:
    if cte == "base64":
        return base64.encodebytes(data).decode("ascii")
    if cte == "quoted-printable":
        return _qp(data)
    return data


def charsets() -> None:
    for stem, label, codec, cte, subject, body in CHARSETS:
        encoded_subject = f"=?{label}?B?{base64.b64encode(subject.encode(codec)).decode()}?="
        top = head(f"charset-{stem}", encoded_subject) + (
            f'Content-Type: text/plain; charset="{label}"\nContent-Transfer-Encoding: {cte}\n\n'
        )
        payload = _body(body.encode(codec), cte)
        data = top.encode("ascii") + (payload if isinstance(payload, bytes) else payload.encode("ascii")) + b"\n"
        write(f"charset_{stem}.eml", data)
    # No charset declared at all: 8-bit Shift_JIS bytes (an old Japanese client).
    japanese = ("お世話になっております。大阪オフィスの電話回線が本日午前九時から不通です。"
                "至急ご確認のほど、よろしくお願いいたします。")
    subject = f"=?shift_jis?B?{base64.b64encode('回線不通'.encode('cp932')).decode()}?="
    write("charset_undeclared_shift_jis.eml", head("charset-undeclared-sjis", subject).encode("ascii") +
          b"Content-Type: text/plain\nContent-Transfer-Encoding: 8bit\n\n" + japanese.encode("cp932") + b"\n")
    # Declared UTF-8, written in Windows-1251 (a mail gateway that relabels everything).
    russian = ("Добрый день. С утра в офисе в Новосибирске не работает телефония, "
               "просьба срочно проверить линию и перезвонить.")
    write("charset_mislabelled_utf8_is_windows_1251.eml",
          head("charset-mislabelled-1251", "Telephony down in Novosibirsk").encode("ascii") +
          b'Content-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: 8bit\n\n' +
          russian.encode("cp1251") + b"\n")


if __name__ == "__main__":
    forwards()
    attachments()
    charsets()
    sys.exit(0)
