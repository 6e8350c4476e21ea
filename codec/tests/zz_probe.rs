#[test]
fn probe() {
    for inner in [r#"<active value="yes"/>"#, r#"<telecom><rank value="abc"/></telecom>"#, r#"<telecom><rank value="007"/></telecom>"#, r#"<multipleBirthInteger value="1.5"/>"#, r#"<extension url="a b"><valueString value="x"/></extension>"#] {
        let xml = format!(r#"<Bundle xmlns="http://hl7.org/fhir"><type value="batch"/><entry><request><method value="GET"/><url value="x"/></request></entry><entry><resource><Patient>{inner}</Patient></resource></entry></Bundle>"#);
        let r = kiunga_codec::parse_bundle(xml.as_bytes(), kiunga_codec::Format::Xml);
        eprintln!("{inner} => {:?}", r.map(|p| p.entry_errors));
    }
    let xml = r#"<Bundle xmlns="http://hl7.org/fhir"><type value="batch"/><entry><resource><Observation><status value="final"/><code><text value="x"/></code><valueQuantity><value value="1.x"/></valueQuantity></Observation></resource></entry></Bundle>"#;
    eprintln!("dec => {:?}", kiunga_codec::parse_bundle(xml.as_bytes(), kiunga_codec::Format::Xml).map(|p| p.entry_errors));
}
